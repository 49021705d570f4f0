"""dvc.yaml declares, for every stage, each project file whose code the stage runs.

The stage scripts' imports are followed statically (every `import cxr...`, `from cxr... import`
and `import _common`, in the script and, transitively, in each project module it reaches, lazy
imports inside functions too), and each file found must be a stage dependency, listed itself or
under a listed folder. A file left out would let `dvc repro` call a stage up to date after its
code changed. Exempt: an `__init__.py` that imports nothing (a docstring, a version string).
Names that `cxr.models` resolves lazily (its `_WHERE` map) count as imports of their submodule.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
NOT_DEPENDENCIES: set[str] = set()


def _module_file(module: str) -> Path | None:
    path = SRC.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _lazy_names(package: str) -> dict[str, str]:
    """A package's PEP 562 map {name: submodule} (`_WHERE` in cxr.models), else {}."""
    init = SRC.joinpath(*package.split("."), "__init__.py")
    if not init.is_file():
        return {}
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "_WHERE" for target in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package: list[str] = []
    if SRC in path.parents:
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names
                      if alias.name.split(".")[0] in ("cxr", "_common")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] == "cxr":
                found.add(module)
                lazy = _lazy_names(module)
                found |= {f"{module}.{lazy.get(alias.name, alias.name)}"  # submodules
                          for alias in node.names}
            elif module == "_common":
                found.add("_common")
    return found


def _code_files(script: Path) -> set[Path]:
    files: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in files:
            continue
        files.add(path)
        for module in _imported_modules(path):
            if module == "_common":
                todo.append(REPO / "stages" / "_common.py")
                continue
            parts = module.split(".")
            for end in range(1, len(parts) + 1):  # a package's __init__ runs first
                found = _module_file(".".join(parts[:end]))
                if found is not None:
                    todo.append(found)
    return files


def _exempt(relative: str, path: Path) -> bool:
    if relative in NOT_DEPENDENCIES:
        return True
    return path.name == "__init__.py" and not any(
        isinstance(node, ast.Import | ast.ImportFrom) for node in ast.walk(ast.parse(
            path.read_text())))


STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_file_a_stage_runs_is_a_declared_dependency(stage):
    definition = STAGES[stage].get("do", STAGES[stage])
    script = REPO / definition["cmd"].split()[1]
    deps = [dep.rstrip("/") for dep in definition.get("deps", [])]
    files = _code_files(script)
    assert len(files) > 3, f"{stage}: found only {sorted(map(str, files))}"
    missing = []
    for path in sorted(files):
        relative = path.relative_to(REPO).as_posix()
        if _exempt(relative, path):
            continue
        if not any(relative == dep or relative.startswith(dep + "/") for dep in deps):
            missing.append(relative)
    assert missing == [], f"dvc.yaml stage {stage!r} runs these files but does not list them"


def test_the_import_walk_sees_lazy_and_relative_imports():
    files = {p.relative_to(REPO).as_posix() for p in _code_files(REPO / "stages/train.py")}
    assert {"stages/_common.py", "src/cxr/params.py",
            "src/cxr/training/fit.py", "src/cxr/models/backbones.py"} <= files
