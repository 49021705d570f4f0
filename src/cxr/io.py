"""Deterministic writers for the files that stages hand to each other.

Byte-identical outputs for identical inputs are what let DVC skip work and let a reviewer
diff two runs, so every table and JSON file goes through these functions; ``read_table`` reads
the tables back the way every stage needs them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def write_table(df: pd.DataFrame, path: str | Path) -> Path:
    """CSV with a fixed line ending and float format, parent folders created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(path, index=False, lineterminator="\n", float_format="%.6g")
    return path


def read_table(path: str | Path) -> pd.DataFrame:
    """A table written by :func:`write_table`: ``path`` stays text and empty cells stay ``""``.

    (pandas would otherwise turn an all-digit path into a number and an empty or "NA" cell into
    NaN.)
    """
    return pd.read_csv(path, dtype={"path": str}, keep_default_na=False)


def read_json(path: str | Path) -> Any:
    """The JSON document at ``path``."""
    return json.loads(Path(path).read_text())


def to_jsonable(value: Any) -> Any:
    """numpy scalars/arrays -> Python, NaN/inf -> None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(data: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(data), indent=2) + "\n")
    return path
