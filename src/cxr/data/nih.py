"""Read the files NIH published with ChestX-ray14 into validated, normalized tables.

Quirks handled here, each on purpose and each documented where it is handled:

* ``Data_Entry_2017_v2020.csv`` (current) has a 9-name header whose last two names contain a
  comma (``OriginalImage[Width,Height]``), so the header splits into the same 11 comma-separated
  fields as every row. The older/Kaggle ``Data_Entry_2017.csv`` spells those names
  ``OriginalImageWidth, ...`` or the same bracketed way, ends every line with a trailing comma
  (12 fields, the last empty) and writes ages as ``058Y`` (``M``/``D`` suffixes exist too).
  We never trust pandas' column inference: fields are counted per line first, and a row with the
  wrong count is an error naming its line, so nothing can be shifted silently.
* ``BBox_List_2017.csv`` splits ``Bbox [x,y,w,h]`` the same way, pads every line with empty
  fields and spells Infiltration ``Infiltrate`` (resolved through :data:`cxr.labels.ALIASES`).
* Images live in nested folders (``images_001/images/*.png`` in the official download).

Every problem raises :class:`NIHFormatError` naming the file, the 1-based line number in that
file (the header is line 1) and the offending value. Rows are never dropped silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from cxr.data.nih_format import (  # noqa: F401  (re-exported: the public names)
    _BBOX_HEADER_KEYS,
    _DATA_ENTRY_HEADER_KEYS,
    _EXAMPLES,
    BBOX_COLUMNS,
    DATA_ENTRY_COLUMNS,
    FINDING_LABELS,
    IMAGE_INDEX,
    IMAGE_SUFFIXES,
    LABEL_TABLE_COLUMNS,
    PATIENT_ID,
    NIHFormatError,
    _check_file_names,
    _check_unique,
    _encode_unique,
    _fail,
    _parse_age,
    _parse_float,
    _parse_int,
    _raise_first,
    _read_bytes,
    _read_fields,
)
from cxr.labels import LABELS, LabelError, canonical

# ---------------------------------------------------------------------------------------------
# Public readers
# ---------------------------------------------------------------------------------------------


def read_data_entry(path) -> pd.DataFrame:
    """Read either published ``Data_Entry_2017*.csv`` into the same normalized table.

    Columns are :data:`DATA_ENTRY_COLUMNS` with dtypes str (names, labels, gender, view),
    int64 (follow-up, patient id, age in completed years, original width/height) and float64
    (pixel spacing). The index, named ``line``, is each row's 1-based line number in the file so
    that later checks (:func:`encode_labels`) can name the row. Labels are validated here.
    """
    table = _read_fields(path, len(DATA_ENTRY_COLUMNS), _DATA_ENTRY_HEADER_KEYS,
                         DATA_ENTRY_COLUMNS, max_padding=1)
    _check_file_names(table[IMAGE_INDEX], path)
    _check_unique(table[IMAGE_INDEX], path)
    _encode_unique(table[FINDING_LABELS], path)

    table["Follow-up #"] = _parse_int(table["Follow-up #"], path, "Follow-up #")
    table[PATIENT_ID] = _parse_int(table[PATIENT_ID], path, PATIENT_ID)
    table["Patient Age"] = _parse_age(table["Patient Age"], path)
    _raise_first(~table["Patient Gender"].isin(["M", "F"]).to_numpy(), table["Patient Gender"],
                 path, "invalid Patient Gender", "'M' or 'F'")
    _raise_first(~table["View Position"].str.fullmatch(r"[A-Z]+").to_numpy(dtype=bool),
                 table["View Position"], path, "invalid View Position",
                 "an upper-case view code such as 'PA' or 'AP'")
    for column in ("OriginalImage Width", "OriginalImage Height"):
        table[column] = _parse_int(table[column], path, column)
    for column in ("OriginalImagePixelSpacing x", "OriginalImagePixelSpacing y"):
        table[column] = _parse_float(table[column], path, column)
    return table


def encode_labels(df: pd.DataFrame, source) -> pd.DataFrame:
    """Return a copy of ``df`` with the 14 label columns (uint8 0/1) appended in canonical order.

    ``source`` names the file in error messages; rows are named by ``df``'s index (the file line
    when ``df`` comes from :func:`read_data_entry`).
    """
    if FINDING_LABELS not in df.columns:
        raise NIHFormatError(f"{source}: missing column {FINDING_LABELS!r}; columns are "
                             f"{list(df.columns)}", source=source)
    matrix = _encode_unique(df[FINDING_LABELS].astype(str), source)
    labels = pd.DataFrame(matrix, index=df.index, columns=list(LABELS))
    return pd.concat([df.drop(columns=[c for c in LABELS if c in df.columns]), labels], axis=1)


# DICOM films under images_dir (read by cxr.data.dicom; the same set as its DICOM_SUFFIXES,
# kept here so that ingest does not import the decoder). Ingest maps names by extension, so an
# extension-less DICOM is not found here (`cxr predict` finds those by their magic).
DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_INGEST_SUFFIXES = IMAGE_SUFFIXES | DICOM_SUFFIXES


def _walk_images(images_dir) -> dict[str, str]:
    """name -> path string (``images_dir`` as given joined with the path below it)."""
    root = os.fspath(images_dir)
    if not os.path.isdir(root):
        raise NIHFormatError(f"{root}: images_dir is not a directory", source=root)
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # deterministic walk, so the duplicate error is reproducible
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() not in _INGEST_SUFFIXES:
                continue
            # os.walk's dirpath already starts with root as given: no relpath per file needed.
            path = os.path.join(dirpath, name)
            if name in found:
                raise NIHFormatError(
                    f"{root}: image {name!r} found twice: {found[name]} and {path}; "
                    "expected each image name once under images_dir",
                    source=root, value=name)
            found[name] = path
    return found


def find_images(images_dir) -> dict[str, Path]:
    """Map file name -> path for every image (.png/.jpg/.jpeg/.dcm/.dicom) under ``images_dir``,
    recursively.

    The official download nests ``images_001/images/*.png``; the names are unique across
    folders, and a name found twice is an error (which copy is meant would be a guess).
    """
    return {name: Path(path) for name, path in _walk_images(images_dir).items()}


def build_label_table(csv_path, images_dir, check_images: bool = True) -> pd.DataFrame:
    """The ingest stage's ``data/interim/labels.csv``: one row per image, sorted by name.

    Columns :data:`LABEL_TABLE_COLUMNS`. ``path`` is ``images_dir`` (as given, so a relative
    folder gives portable relative paths) joined with the image's path below it, with '/'
    separators. ``check_images=False`` is the labels-only mode: the file system is not touched
    for images and ``path`` is ''.
    """
    table = encode_labels(read_data_entry(csv_path), csv_path)
    if check_images:
        images = _walk_images(images_dir)
        names = table[IMAGE_INDEX]
        missing = ~names.isin(images.keys()).to_numpy()
        if missing.any():
            examples = ", ".join(names[missing].iloc[:_EXAMPLES])
            raise NIHFormatError(
                f"{csv_path}: {int(missing.sum())} of {len(names)} images listed are not "
                f"under {images_dir} (searched recursively), e.g. {examples}",
                source=csv_path, row=int(table.index[missing][0]),
                value=names[missing].iloc[0])
        # '/' on every OS, so labels.csv written on Windows still works elsewhere.
        table["path"] = [images[name].replace(os.sep, "/") for name in names]
    else:
        table["path"] = ""
    table = table.sort_values(IMAGE_INDEX, kind="mergesort").reset_index(drop=True)
    return table.loc[:, list(LABEL_TABLE_COLUMNS)]


def read_bbox_list(path) -> pd.DataFrame:
    """Read ``BBox_List_2017.csv`` -> columns :data:`BBOX_COLUMNS`.

    Finding labels are canonical (the file writes 'Infiltrate'); x, y, w, h are float pixels of
    the original image. The index is the file line, as in :func:`read_data_entry`.
    """
    table = _read_fields(path, len(BBOX_COLUMNS), _BBOX_HEADER_KEYS, BBOX_COLUMNS,
                         max_padding=16)
    _check_file_names(table[IMAGE_INDEX], path)
    finding = table["Finding Label"]
    canonical_names = {}
    for value in finding.unique():
        try:
            canonical_names[value] = canonical(value)
        except LabelError as error:
            row = int(finding.index[(finding == value).to_numpy()][0])
            raise _fail(path, row, "invalid Finding Label", value,
                        expected="one of " + ", ".join(LABELS)) from error
    table["Finding Label"] = finding.map(canonical_names)
    for column in ("x", "y", "w", "h"):
        table[column] = _parse_float(table[column], path, column)
    for column in ("w", "h"):
        _raise_first((table[column] <= 0).to_numpy(), table[column], path,
                     f"non-positive box size {column}", "a positive width and height")
    return table


def read_image_list(path) -> list[str]:
    """Read NIH's ``train_val_list.txt`` / ``test_list.txt``: one image file name per line."""
    data = _read_bytes(path).decode("utf-8")
    rows = [(number, line.strip()) for number, line in enumerate(data.splitlines(), 1)]
    rows = [(number, name) for number, name in rows if name]  # blank lines carry no name
    names = pd.Series([name for _, name in rows], index=[n for n, _ in rows], dtype=str)
    _check_file_names(names, path, what="image name")
    _check_unique(names, path)
    return names.tolist()

