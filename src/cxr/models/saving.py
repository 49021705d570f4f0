"""Save a model as a byte-reproducible `.keras` archive.

`model.save` writes three things that change from one save to the next although the model
does not: the save time (`date_saved` in metadata.json), the zip timestamp of
model.weights.h5, and `shared_object_id`s in config.json, which are Python object ids
(`id()`) of objects the config shares (Keras 3.15: every layer's DTypePolicy). The weights
file itself is deterministic. So a deterministic training run still gave a new file, a new
DVC hash, and reran every stage downstream of an unchanged model.

:func:`save_model` saves with Keras, then rewrites the archive with those three fixed: the
date is the zip epoch (1980-01-01, which Keras already gives the other members), and the
shared-object ids are renumbered 1, 2, ... in order of first appearance (a bijection, so
the objects Keras shares on loading are the same). Everything else is copied byte for byte,
in Keras' member order and compression; the file loads with `keras.models.load_model`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import keras

FIXED_DATE_TIME = (1980, 1, 1, 0, 0, 0)  # the zip epoch
FIXED_DATE_SAVED = "1980-01-01@00:00:00"  # Keras' "%Y-%m-%d@%H:%M:%S"
_SHARED_ID = re.compile(rb'"shared_object_id": (-?\d+)')


def renumber_shared_objects(config: bytes) -> bytes:
    """`config` with each distinct `shared_object_id` replaced by 1, 2, ... (first seen)."""
    numbers: dict[bytes, int] = {}

    def replace(match: re.Match) -> bytes:
        number = numbers.setdefault(match.group(1), len(numbers) + 1)
        return b'"shared_object_id": ' + str(number).encode()

    return _SHARED_ID.sub(replace, config)


def fix_metadata(metadata: bytes, source: str) -> bytes:
    """metadata.json with `date_saved` set to :data:`FIXED_DATE_SAVED`."""
    try:
        fields = json.loads(metadata)
    except json.JSONDecodeError as error:
        raise ValueError(f"{source}: metadata.json is not JSON ({error})") from error
    if not isinstance(fields, dict):
        raise ValueError(f"{source}: metadata.json holds {type(fields).__name__}; "
                         "expected an object")
    if "date_saved" in fields:
        fields["date_saved"] = FIXED_DATE_SAVED
    return json.dumps(fields).encode()


def make_reproducible(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy the `.keras` archive `source` to `target` without its save-time variation.

    `target` is written through a temporary file and renamed, so a reader never sees half
    an archive; `source` may equal `target`.
    """
    source, target = Path(source), Path(target)
    with zipfile.ZipFile(source) as archive:
        members = [(info, archive.read(info)) for info in archive.infolist()]
    names = [info.filename for info, _ in members]
    for required in ("metadata.json", "config.json"):
        if required not in names:
            raise ValueError(f"{source}: no {required} in the archive (members: {names}); "
                             "expected a Keras 3 .keras file")
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                       suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream, zipfile.ZipFile(stream, "w") as archive:
            for info, data in members:
                if info.filename == "metadata.json":
                    data = fix_metadata(data, str(source))
                elif info.filename == "config.json":
                    data = renumber_shared_objects(data)
                fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_DATE_TIME)
                fixed.compress_type = info.compress_type
                fixed.external_attr = 0o644 << 16
                archive.writestr(fixed, data)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return target


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """`model.save(path)` (a `.keras` file), byte-reproducible: same weights, same bytes."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save_model writes a .keras archive; got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".save-") as folder:
        raw = Path(folder) / path.name
        model.save(raw)
        return make_reproducible(raw, path)
