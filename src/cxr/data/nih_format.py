"""How NIH's CSV files are parsed and checked: column names and accepted header spellings,
field counting per line, vectorised column checks, and NIHFormatError (file, line, value).

The readers in :mod:`cxr.data.nih` are built from these; the quirks are listed there.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import numpy as np
import pandas as pd

from cxr.labels import LABELS, LabelError, encode

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
