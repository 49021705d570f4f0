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

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.labels import LABELS, LabelError, canonical, encode

IMAGE_INDEX = "Image Index"
FINDING_LABELS = "Finding Labels"
PATIENT_ID = "Patient ID"

# The normalized columns of a Data_Entry table, in file order.
DATA_ENTRY_COLUMNS: tuple[str, ...] = (
    IMAGE_INDEX,
    FINDING_LABELS,
    "Follow-up #",
    PATIENT_ID,
    "Patient Age",
    "Patient Gender",
    "View Position",
    "OriginalImage Width",
    "OriginalImage Height",
    "OriginalImagePixelSpacing x",
    "OriginalImagePixelSpacing y",
)

# Header spellings accepted for each column, compared after _header_key(). The bracketed
# v2020 names split on their inner comma ("OriginalImage[Width" + "Height]"), the older file
# spells them out ("OriginalImageWidth", "OriginalImagePixelSpacing_x").
_DATA_ENTRY_HEADER_KEYS: tuple[frozenset[str], ...] = (
    frozenset({"imageindex"}),
    frozenset({"findinglabels"}),
    frozenset({"followup#", "followup"}),
    frozenset({"patientid"}),
    frozenset({"patientage"}),
    frozenset({"patientgender"}),
    frozenset({"viewposition"}),
    frozenset({"originalimagewidth"}),
    frozenset({"height", "originalimageheight"}),
    frozenset({"originalimagepixelspacingx"}),
    frozenset({"y", "originalimagepixelspacingy"}),
)

# The label table written by the ingest stage (data/interim/labels.csv), see DESIGN.md.
LABEL_TABLE_COLUMNS: tuple[str, ...] = (
    IMAGE_INDEX,
    PATIENT_ID,
    "View Position",
    "Patient Age",
    "Patient Gender",
    "path",
    *LABELS,
)

BBOX_COLUMNS: tuple[str, ...] = (IMAGE_INDEX, "Finding Label", "x", "y", "w", "h")
_BBOX_HEADER_KEYS: tuple[frozenset[str], ...] = (
    frozenset({"imageindex"}),
    frozenset({"findinglabel"}),
    frozenset({"bboxx", "x"}),
    frozenset({"y"}),
    frozenset({"w"}),
    frozenset({"h"}),
)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})

# How many offending names an error message lists before summarising with a count.
_EXAMPLES = 5

# Age suffixes of the older file: years, months, days. Ages are reported in completed years
# (floor), the unit of the v2020 file; 365 days per year is precise enough for that.
_AGE_DIVISOR = {"": 1, "Y": 1, "M": 12, "D": 365}


class NIHFormatError(ValueError):
    """A NIH file that does not have the published layout; names file, row and value."""

    def __init__(self, message: str, *, source=None, row: int | None = None, value=None):
        super().__init__(message)
        self.source = None if source is None else str(source)
        self.row = row
        self.value = value


def _fail(source, row: int | None, problem: str, value=None, *, detail: str = "",
          expected: str = "", affected: int = 1) -> NIHFormatError:
    """Build the one error format every check uses: where, what, why, what was allowed."""
    where = f"{source}" if row is None else f"{source}, row {row}"
    message = f"{where}: {problem}"
    if value is not None:
        message += f" {value!r}"
    if detail:
        message += f" ({detail})"
    if expected:
        message += f"; expected {expected}"
    if affected > 1:
        message += f" ({affected} rows affected)"
    return NIHFormatError(message, source=source, row=row, value=value)


# ---------------------------------------------------------------------------------------------
# Low-level: count fields per line, then let pandas' C parser do the actual parsing.
# ---------------------------------------------------------------------------------------------


def _header_key(name: str) -> str:
    """Spelling-insensitive key: 'OriginalImagePixelSpacing[x' and '..._x' compare equal."""
    return re.sub(r"[^a-z0-9#]", "", name.lower())


def _read_bytes(path) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise NIHFormatError(f"{path}: cannot read file ({error})", source=path) from error
    # Excel and some Windows tools prepend a byte-order mark; it is not part of the header.
    return data[3:] if data.startswith(b"\xef\xbb\xbf") else data


def _fields_per_line(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Comma-separated field count and 'is blank' flag of every line, vectorised.

    Counting commas with numpy instead of splitting lines in Python keeps a 112k-line file at a
    few milliseconds. NIH files contain no quotes, and the table is parsed with QUOTE_NONE, so
    these counts are exactly what the C parser sees.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    newlines = np.flatnonzero(buffer == ord("\n"))
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(buffer))
    starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
    commas = np.flatnonzero(buffer == ord(","))
    fields = np.bincount(np.searchsorted(ends, commas), minlength=len(ends))[: len(ends)] + 1
    lengths = ends - starts
    # A CRLF line of length 1 holds only '\r': blank too.
    has_cr = lengths > 0
    has_cr[has_cr] = buffer[ends[has_cr] - 1] == ord("\r")
    blank = (lengths - has_cr) == 0
    return fields, blank


def _header_tokens(data: bytes, path) -> list[str]:
    first_line = data.split(b"\n", 1)[0].decode("utf-8", errors="replace").rstrip("\r")
    # A tool may have quoted the bracketed names ("OriginalImage[Width,Height]"); splitting on
    # every comma still yields the same tokens as the unquoted header.
    tokens = [token.strip().strip('"').strip() for token in first_line.split(",")]
    while tokens and tokens[-1] == "":
        tokens.pop()
    if not tokens:
        raise _fail(path, 1, "empty header line", expected="the NIH column names")
    return tokens


def _check_header(tokens: list[str], accepted: tuple[frozenset[str], ...],
                  names: tuple[str, ...], path) -> None:
    """Require the published columns in the published order; name the first one missing."""
    keys = [_header_key(token) for token in tokens]
    for position, (allowed, name) in enumerate(zip(accepted, names, strict=True)):
        if position < len(keys) and keys[position] in allowed:
            continue
        if not any(key in allowed for key in keys):
            raise _fail(path, 1, f"missing column {name!r}; header is", ",".join(tokens))
        raise _fail(path, 1, f"column {name!r} is not at position {position + 1}; header is",
                    ",".join(tokens))
    extra = [t for t in tokens[len(accepted):] if not re.fullmatch(r"Unnamed: ?\d+", t)]
    if extra:
        raise _fail(path, 1, "unexpected column", extra[0],
                    expected="only the columns " + ", ".join(names))


def _parse_strings(data: bytes, width: int) -> pd.DataFrame:
    """All fields as strings with pandas' C parser (the fast path: no per-row Python)."""
    return pd.read_csv(
        io.BytesIO(data),
        header=None,
        skiprows=1,
        names=list(range(width)),
        dtype=str,
        na_filter=False,  # an empty field stays '' so that checks can name it
        quoting=csv.QUOTE_NONE,
        skip_blank_lines=True,
        index_col=False,
        encoding="utf-8",
        engine="c",
    )


def _read_fields(path, n_fields: int, accepted: tuple[frozenset[str], ...],
                 names: tuple[str, ...], max_padding: int) -> pd.DataFrame:
    """Parse a comma-separated NIH file into string columns ``names``, index = file line.

    Every data line must have exactly ``n_fields`` fields, optionally followed by up to
    ``max_padding`` *empty* fields (the trailing commas of the older files). Anything else is an
    error naming the line: this is what makes a silent column shift impossible.
    """
    data = _read_bytes(path)
    tokens = _header_tokens(data, path)
    _check_header(tokens, accepted, names, path)

    fields, blank = _fields_per_line(data)
    lines = np.arange(1, len(fields) + 1)
    # Blank lines (e.g. a doubled final newline) carry no row; skip them but keep numbering.
    data_line = ~blank & (lines > 1)
    wrong = data_line & ((fields < n_fields) | (fields > n_fields + max_padding))
    if wrong.any():
        first = int(np.flatnonzero(wrong)[0])
        raise _fail(path, first + 1, "wrong number of fields:", int(fields[first]),
                    expected=f"{n_fields}" + (f" (plus up to {max_padding} empty)"
                                               if max_padding else ""),
                    affected=int(wrong.sum()))
    width = int(fields[data_line].max()) if data_line.any() else n_fields
    try:
        table = _parse_strings(data, width)
    except (UnicodeDecodeError, pd.errors.ParserError) as error:
        raise _fail(path, None, f"cannot parse as UTF-8 CSV ({error})") from error
    if len(table) != int(data_line.sum()):  # the C parser and our counts must agree
        raise _fail(path, None, f"parsed {len(table)} rows but the file has "
                                f"{int(data_line.sum())} data lines")
    table.index = pd.Index(lines[data_line], name="line")
    padding = table.iloc[:, n_fields:]
    if padding.shape[1]:
        filled = (padding != "").any(axis=1).to_numpy()
        if filled.any():
            line = int(table.index[filled][0])
            value = padding.loc[line][padding.loc[line] != ""].iloc[0]
            raise _fail(path, line, "unexpected value in trailing field", value,
                        expected=f"{n_fields} fields", affected=int(filled.sum()))
    table = table.iloc[:, :n_fields]
    table.columns = list(names)
    for column in names:
        table[column] = table[column].str.strip()
    return table


# ---------------------------------------------------------------------------------------------
# Column checks: vectorised, each raises on the first offending row with a count of the rest.
# ---------------------------------------------------------------------------------------------


def _raise_first(bad: np.ndarray | pd.Series, values: pd.Series, path, problem: str,
                 expected: str) -> None:
    bad = np.asarray(bad, dtype=bool)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise _fail(path, int(values.index[position]), problem, values.iloc[position],
                    expected=expected, affected=int(bad.sum()))


def _check_file_names(names: pd.Series, path, what: str = IMAGE_INDEX) -> None:
    """Image names become paths later: refuse anything that could leave the images folder."""
    unsafe = (
        (names == "")
        | names.str.contains("/", regex=False)
        | names.str.contains("\\", regex=False)
        | names.str.contains("..", regex=False)
    )
    _raise_first(unsafe, names, path, f"invalid {what}",
                 "a plain file name such as '00000001_000.png' (no '/', '\\', '..')")


def _check_unique(names: pd.Series, path) -> None:
    duplicated = names.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first_value = names[duplicated].iloc[0]
        rows = names.index[(names == first_value).to_numpy()][:2].tolist()
        raise _fail(path, int(rows[1]), f"duplicate {IMAGE_INDEX}", first_value,
                    detail=f"first on row {rows[0]}", expected="each image once",
                    affected=int(names.duplicated().sum()))


def _parse_int(values: pd.Series, path, column: str) -> pd.Series:
    _raise_first(~values.str.fullmatch(r"[0-9]{1,18}").to_numpy(dtype=bool), values, path,
                 f"unparsable {column}", "a non-negative integer")
    return values.astype(np.int64)


def _parse_float(values: pd.Series, path, column: str) -> pd.Series:
    numbers = pd.to_numeric(values, errors="coerce").astype(np.float64)
    bad = ~np.isfinite(numbers.to_numpy()) | (values == "").to_numpy()
    _raise_first(bad, values, path, f"unparsable {column}", "a finite number")
    return numbers


def _parse_age(values: pd.Series, path) -> pd.Series:
    """'58' (v2020) or '058Y' / '006M' / '020D' (older file) -> completed years (int)."""
    parts = values.str.extract(r"^([0-9]{1,18})([YMD]?)$")
    _raise_first(parts[0].isna().to_numpy(), values, path, "unparsable Patient Age",
                 "whole years such as 58 or 058Y (M = months, D = days)")
    divisor = parts[1].map(_AGE_DIVISOR).astype(np.int64)
    return (parts[0].astype(np.int64) // divisor).rename("Patient Age")


def _encode_unique(findings: pd.Series, path) -> np.ndarray:
    """Multi-hot matrix for a 'Finding Labels' column.

    There are ~800 distinct label strings among 112k rows, so each distinct string is encoded
    once (by cxr.labels.encode, the single source of truth) and the result is mapped back.
    """
    codes, uniques = pd.factorize(findings, sort=False)
    encoded = np.zeros((len(uniques), len(LABELS)), dtype=np.uint8)
    for code, value in enumerate(uniques):
        try:
            encoded[code] = encode(value)
        except LabelError as error:
            row = int(findings.index[np.argmax(codes == code)])
            raise _fail(path, row, f"invalid {FINDING_LABELS}", value, detail=str(error),
                        affected=int((codes == code).sum())) from error
    return encoded[codes]


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


def _walk_images(images_dir) -> dict[str, str]:
    """name -> path string (``images_dir`` as given joined with the path below it)."""
    root = os.fspath(images_dir)
    if not os.path.isdir(root):
        raise NIHFormatError(f"{root}: images_dir is not a directory", source=root)
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()  # deterministic walk, so the duplicate error is reproducible
        for name in sorted(filenames):
            if os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
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
    """Map file name -> path for every image (.png/.jpg/.jpeg) under ``images_dir``, recursively.

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

