"""What every stage does on start: parse its paths (dvc.yaml passes them in `cmd`), find the
project root and load params.yaml. The only place in the project that reads DVC's environment."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from cxr.params import Params, load_params


def parser(description: str | None, *, models: Sequence[str] = ()) -> argparse.ArgumentParser:
    """An argument parser with ``--params`` (default params.yaml) and, given the model names
    (`cxr.models.registry.MODEL_NAMES`), a positional ``model`` among them. The model stages
    import the registry themselves: this module imports no more of cxr than params, so the
    other stages need not list cxr/models among their DVC dependencies."""
    result = argparse.ArgumentParser(description=description)
    if models:
        result.add_argument("model", choices=list(models))
    result.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file (default: params.yaml)")
    return result


def paths(parser: argparse.ArgumentParser, **names: str) -> argparse.ArgumentParser:
    """Add one required ``--NAME PATH`` option per keyword (underscores become dashes)."""
    for name, help_text in names.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True,
                            help=help_text)
    return parser


def start(parser: argparse.ArgumentParser) -> tuple[argparse.Namespace, Params]:
    """Parsed arguments and the loaded params."""
    args = parser.parse_args()
    return args, load_params(args.params)


def dvc_root() -> Path:
    """The project root: `dvc exp run --queue` runs stages in a temporary copy and says where the
    real one is in DVC_ROOT (MLflow's store must outlive the copy)."""
    return Path(os.environ.get("DVC_ROOT", "."))


def dvc_exp_name() -> str:
    return os.environ.get("DVC_EXP_NAME", "")
