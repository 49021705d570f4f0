"""Image files -> pixels: header sizes, one gray decoder, and the prepared uint8 image store.

:func:`read_gray` is the one decoder for every image file the project reads outside tf.data:
NIH's PNGs are 8-bit gray, but copies pass through tools that save them as RGB, RGBA, 16-bit
or JPEG, and each must become the same one-channel 8-bit image. DICOM films (found by their
magic, whatever the extension) are read by :mod:`cxr.data.dicom` into the same 8-bit gray.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cxr.data import dicom
from cxr.io import write_json, write_table

# PIL modes of 16-bit gray PNGs (Pillow >= 10 opens them as I;16, older versions as I).
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


@dataclass(frozen=True)
class GrayImage:
    """What :func:`read_image` decoded: ``pixels`` (2-D uint8), and the DICOM film (identity
    and warnings) when the file was a DICOM, else None."""

    pixels: np.ndarray
    dicom: dicom.DicomFilm | None = None

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.dicom.warnings if self.dicom is not None else ()


def read_image(path) -> GrayImage:
    """The one dispatch: a DICOM (``DICM`` at byte 128, checked before Pillow sees the file,
    whose preamble may hold a TIFF header) goes to :func:`cxr.data.dicom.read_dicom`, anything
    else to Pillow (:func:`read_gray`'s rules). ValueError naming the file when refused."""
    if dicom.is_dicom(path):
        film = dicom.read_dicom(path)
        return GrayImage(film.pixels, film)
    return GrayImage(_read_pillow(path))


def read_gray(path) -> np.ndarray:
    """Any PNG/JPEG/DICOM -> a 2-D uint8 array (height, width): one 8-bit gray channel.

    DICOM: :mod:`cxr.data.dicom`'s rule (modality LUT, VOI window/LUT, MONOCHROME1 inverted);
    its warnings (not a CR/DX, not a frontal view, ...) are issued as
    :class:`cxr.data.dicom.DicomWarning` naming the file (the prepare stage's log shows them);
    :func:`read_image` returns them instead. PNG/JPEG:

    * 8-bit gray (``L``): as stored.
    * gray + alpha (``LA``), RGBA, palette with transparency: the alpha channel is dropped
      (not composited: NIH films are opaque, an alpha channel is an export artefact).
    * RGB / palette / CMYK JPEG: ITU-R 601-2 luminance ``0.299 R + 0.587 G + 0.114 B`` (PIL's
      ``convert("L")``; ``tf.image.rgb_to_grayscale`` uses the same weights).
    * 16-bit gray: scaled by the full 16-bit range, ``round(v * 255 / 65535)``, never clipped
      (clipping would turn most of a 16-bit film white). A 32-bit integer image (``I``, how
      older Pillow opens 16-bit PNGs) is treated as 16-bit and must hold values <= 65535.
    * 1-bit: 0 / 255.

    Raises ValueError naming the file when it cannot be read or has an unsupported mode.
    """
    image = read_image(path)
    for message in image.warnings:
        warnings.warn(f"{os.fspath(path)}: {message}", dicom.DicomWarning, stacklevel=2)
    return image.pixels


def _read_pillow(path) -> np.ndarray:
    where = os.fspath(path)
    try:
        with Image.open(path) as image:
            image.load()
            return _to_gray(image, where)
    except (OSError, SyntaxError) as error:  # PIL raises SyntaxError for some broken files
        raise ValueError(f"{where}: cannot decode the image ({error})") from error


def _to_gray(image: Image.Image, where: str) -> np.ndarray:
    mode = image.mode
    if mode == "L":
        return np.asarray(image, dtype=np.uint8).copy()
    if mode in _SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{where}: {mode} image holds values outside 0..65535 "
                             f"({values.min()}..{values.max()}); expected a 16-bit image")
        return ((values * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("LA", "La"):
        return np.asarray(image.getchannel("L"), dtype=np.uint8).copy()
    if mode in ("RGBA", "RGBa", "RGBX"):
        image = image.convert("RGB")
        mode = "RGB"
    if mode in ("RGB", "CMYK", "YCbCr", "1"):
        return np.asarray(image.convert("L"), dtype=np.uint8).copy()
    raise ValueError(f"{where}: unsupported image mode {mode!r}; expected 8/16-bit gray, "
                     f"gray+alpha, RGB, RGBA, palette or CMYK")


def read_size(path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header (PIL does not decode the pixels).

    This is the size lesion boxes are drawn in (NIH: 1024 x 1024), not NIH's
    ``OriginalImage[Width,Height]`` (the scanned film's size). A DICOM's comes from its
    ``Columns``/``Rows`` (Pillow would read the TIFF a preamble may hold).
    """
    if dicom.is_dicom(path):
        return dicom.read_size(path)
    try:
        with Image.open(path) as image:
            return tuple(int(v) for v in image.size)  # type: ignore[return-value]
    except (OSError, ValueError) as error:
        raise ValueError(f"{os.fspath(path)}: cannot read the image header ({error})") from error


def read_sizes(names: Iterable[str], paths: Iterable) -> pd.DataFrame:
    """``Image Index``, ``width``, ``height`` of each file (for ``select_boxes``)."""
    names, paths = list(names), list(paths)
    if len(names) != len(paths):
        raise ValueError(f"read_sizes: {len(names)} names but {len(paths)} paths")
    sizes = np.array([read_size(p) for p in paths], dtype=np.int64).reshape(-1, 2)
    return pd.DataFrame({"Image Index": names, "width": sizes[:, 0], "height": sizes[:, 1]})


# ---------------------------------------------------------------------------------------------
# The prepared image store
# ---------------------------------------------------------------------------------------------
# Layout of a store directory (all three files or it is not a store):
#   images.npy  (count, size, size) uint8 gray, row i = index.csv's row i; np.load(mmap_mode="r")
#   index.csv   Image Index, row, source_width, source_height (the decoded file's own size,
#               the pixels lesion boxes are drawn in)
#   store.json  format, version, image_size, count, resize, sha256 of images.npy's pixels and of
#               index.csv; written last, inside a temp dir renamed into place at the very end
STORE_FORMAT = "cxr-image-store"
STORE_VERSION = 1
INDEX_COLUMNS = ("Image Index", "row", "source_width", "source_height")
# PIL's bilinear filter with its support widened by the scale factor on downsizing (PIL always
# does this) is the triangle filter tf.image.resize(..., antialias=True) uses: on 1024 -> 224
# and -> 64 px they differ by at most one grey level, 0.09 on average (tests/test_prepare.py). reducing_gap=None
# keeps PIL from a faster two-step (box, then bilinear) reduction that would differ more.
RESIZE = "PIL bilinear, antialiased (support scaled), reducing_gap=None"
_TEMP_PREFIX = ".tmp-prepare-"


class StoreError(ValueError):
    """A prepared store that is missing, incomplete, or does not match what was asked."""


def resize_gray(gray: np.ndarray, image_size: int) -> np.ndarray:
    """2-D uint8 -> (image_size, image_size) uint8, squashed (no letterbox), antialiased."""
    image = Image.fromarray(np.asarray(gray, dtype=np.uint8), mode="L")
    if image.size == (image_size, image_size):
        return np.asarray(image, dtype=np.uint8).copy()
    resized = image.resize((image_size, image_size), Image.Resampling.BILINEAR,
                           reducing_gap=None)
    return np.asarray(resized, dtype=np.uint8)


def _sha256_rows(images: np.ndarray, chunk: int = 1024) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(images), chunk):
        digest.update(np.ascontiguousarray(images[start:start + chunk]).tobytes())
    return digest.hexdigest()


def _temp_dirs(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{_TEMP_PREFIX}{out.name}-*"))


def prepare_store(paths: Sequence, names: Sequence[str], image_size: int, out_dir,
                  processes: int = 1, progress: Callable[[str], None] | None = print,
                  decode: Callable[[object], np.ndarray] = read_gray) -> dict:
    """Decode and resize every image once into a uint8 gray store at ``out_dir``.

    Args:
        paths: image files, one per name (any format :func:`read_gray` reads).
        names: their ``Image Index`` values (unique); row i of the store is names[i].
        image_size: side of the square images stored (``pipeline.image_size``).
        out_dir: the store directory; replaced only once the new store is complete.
        processes: decoding threads (PIL's decoders and resize release the GIL; threads need
            no fork next to TensorFlow). The bytes written do not depend on it: each image
            goes to its own row.
        progress: called with a log-friendly line about every 10% (None: silent).
        decode: path -> 2-D uint8 (tests inject failures here).

    Atomic: everything is written into a temp dir next to ``out_dir`` that is renamed into
    place at the end, ``store.json`` last; an error removes the temp dir, and a killed run
    leaves only a ``.tmp-prepare-*`` dir (removed by the next run), never a readable store.
    One preparer per ``out_dir`` at a time.

    Returns ``store.json``'s content plus ``seconds``.
    """
    paths, names = [os.fspath(p) for p in paths], [str(n) for n in names]
    if len(paths) != len(names):
        raise ValueError(f"prepare_store: {len(paths)} paths but {len(names)} names")
    if not names:
        raise ValueError("prepare_store: no images given; expected at least one")
    duplicated = pd.Index(names)[pd.Index(names).duplicated()]
    if len(duplicated):
        raise ValueError(f"prepare_store: image name {duplicated[0]!r} is given twice; "
                         f"expected each Image Index once")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"prepare_store: image_size must be a positive int; got {image_size!r}")
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"prepare_store: processes must be a positive int; got {processes!r}")
    started = time.perf_counter()
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in _temp_dirs(out):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    temp = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{out.name}-", dir=out.parent))
    try:
        temp.chmod(0o755)  # mkdtemp's 0700 would follow the store into place
        count = len(paths)
        images = np.lib.format.open_memmap(temp / "images.npy", mode="w+", dtype=np.uint8,
                                           shape=(count, image_size, image_size))
        sizes = np.zeros((count, 2), dtype=np.int64)

        def prepare_one(row: int, images: np.ndarray = images) -> None:
            gray = decode(paths[row])
            if gray.ndim != 2 or gray.dtype != np.uint8:
                raise ValueError(f"{paths[row]} ({names[row]}): decoder returned "
                                 f"{gray.dtype} {gray.shape}; expected 2-D uint8")
            sizes[row] = (gray.shape[1], gray.shape[0])
            images[row] = resize_gray(gray, image_size)

        report = _Progress(count, progress, started)
        if processes > 1:
            with ThreadPoolExecutor(processes) as pool:
                for _ in pool.map(prepare_one, range(count)):
                    report.step()
        else:
            for row in range(count):
                prepare_one(row)
                report.step()
        images.flush()
        index = pd.DataFrame({"Image Index": names, "row": np.arange(count),
                              "source_width": sizes[:, 0], "source_height": sizes[:, 1]})
        write_table(index, temp / "index.csv")
        manifest = {
            "format": STORE_FORMAT, "version": STORE_VERSION, "image_size": image_size,
            "count": count, "dtype": "uint8", "resize": RESIZE,
            "images_sha256": _sha256_rows(images),
            "index_sha256": hashlib.sha256((temp / "index.csv").read_bytes()).hexdigest(),
        }
        del images  # close the memmap before the rename
        write_json(manifest, temp / "store.json")
        if out.exists():  # swap: the old store is gone only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{out.name}-old-",
                                        dir=out.parent))
            os.replace(out, old / "store")
            os.replace(temp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return {**manifest, "seconds": round(time.perf_counter() - started, 3)}


def store_summary(index: pd.DataFrame, image_size: int) -> dict:
    """What prepare did to the files' sizes, from a store's index (the prepare metrics).

    ``upsampled``: files with a side smaller than ``image_size``, enlarged to it (a 64 px copy
    prepared at 224 px holds no detail a 64 px model would not see: the report says so);
    ``non_square``: files whose width and height differ (squashed to a square, not
    letterboxed).
    """
    width = index["source_width"].to_numpy(np.int64)
    height = index["source_height"].to_numpy(np.int64)
    side = np.minimum(width, height)
    upsampled = int((side < image_size).sum())
    return {
        "images": int(len(index)),
        "image_size": int(image_size),
        "source_side_min": int(side.min()) if len(side) else None,
        "source_side_median": float(np.median(side)) if len(side) else None,
        "source_side_max": int(np.maximum(width, height).max()) if len(side) else None,
        "upsampled": upsampled,
        "upsampled_fraction": round(upsampled / len(index), 4) if len(index) else 0.0,
        "non_square": int((width != height).sum()),
    }


class _Progress:
    """``prepare: 1200/5734 images (20%) 3.1 s`` about every tenth (one line each: log files)."""

    def __init__(self, total: int, sink: Callable[[str], None] | None, started: float):
        self.total, self.sink, self.started = total, sink, started
        self.done, self.next_report = 0, 0.1

    def step(self) -> None:
        self.done += 1
        if self.sink is None or self.done < self.next_report * self.total:
            return
        self.sink(f"prepare: {self.done}/{self.total} images ({self.done / self.total:.0%}) "
                  f"{time.perf_counter() - self.started:.1f} s")
        while self.next_report * self.total <= self.done:
            self.next_report += 0.1


@dataclass(frozen=True)
class ImageStore:
    """An opened store: ``images`` (count, size, size) uint8 memmap, ``index``, ``manifest``."""

    directory: Path
    images: np.ndarray
    index: pd.DataFrame
    manifest: dict

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    def rows_for(self, names: Iterable[str]) -> np.ndarray:
        """Store rows (int64) of ``names``, in their order; an absent name is a StoreError."""
        names = [str(n) for n in names]
        rows = pd.Series(self.index["row"].to_numpy(), index=self.index["Image Index"])
        found = pd.Index(names).isin(rows.index)
        if not found.all():
            missing = [n for n, ok in zip(names, found, strict=True) if not ok]
            raise StoreError(f"{self.directory}: {len(missing)} image(s) are not in the store, "
                             f"e.g. {missing[0]!r}; re-run the prepare stage on this table")
        return rows.loc[names].to_numpy(dtype=np.int64)


def open_store(directory, image_size: int | None = None, verify: bool = False) -> ImageStore:
    """Open a store written by :func:`prepare_store`; refuse anything incomplete or mismatched.

    ``image_size``: the size the caller needs (a StoreError names both when they differ).
    ``verify``: also recompute the pixels' checksum (reads the whole store).
    """
    directory = Path(directory)
    manifest_path = directory / "store.json"
    if not manifest_path.is_file():
        raise StoreError(f"{directory}: no store.json, so no complete prepared store here "
                         f"(never prepared, or a run was interrupted); run the prepare stage")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise StoreError(f"{manifest_path}: unreadable ({error})") from error
    if manifest.get("format") != STORE_FORMAT or manifest.get("version") != STORE_VERSION:
        raise StoreError(f"{manifest_path}: format {manifest.get('format')!r} version "
                         f"{manifest.get('version')!r}; expected {STORE_FORMAT!r} version "
                         f"{STORE_VERSION}")
    size, count = int(manifest["image_size"]), int(manifest["count"])
    if image_size is not None and size != image_size:
        raise StoreError(f"{directory}: images are {size} px but {image_size} px are needed "
                         f"(pipeline.image_size); re-run the prepare stage")
    try:
        images = np.load(directory / "images.npy", mmap_mode="r")
        index_bytes = (directory / "index.csv").read_bytes()
    except (OSError, ValueError) as error:
        raise StoreError(f"{directory}: incomplete store ({error})") from error
    if images.shape != (count, size, size) or images.dtype != np.uint8:
        raise StoreError(f"{directory}/images.npy: {images.dtype} {images.shape}; store.json "
                         f"says uint8 ({count}, {size}, {size})")
    if hashlib.sha256(index_bytes).hexdigest() != manifest["index_sha256"]:
        raise StoreError(f"{directory}/index.csv does not match store.json's checksum")
    index = pd.read_csv(io.BytesIO(index_bytes), dtype={"Image Index": str},
                        keep_default_na=False)
    if tuple(index.columns) != INDEX_COLUMNS or len(index) != count \
            or not (index["row"].to_numpy() == np.arange(count)).all():
        raise StoreError(f"{directory}/index.csv: expected columns {INDEX_COLUMNS} and rows "
                         f"0..{count - 1}")
    if verify and _sha256_rows(images) != manifest["images_sha256"]:
        raise StoreError(f"{directory}/images.npy does not match store.json's checksum")
    return ImageStore(directory, images, index, manifest)
