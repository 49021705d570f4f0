"""The lock files: compile them with uv, and check that they still match pyproject.toml.

``requirements/cpu.lock`` pins ``.[cpu,dev,jax]`` and ``requirements/gpu.lock`` pins ``.[gpu,dev]``,
every package with its sha256 hashes, resolved for Python 3.11 (the lowest the project
supports) on Linux. ``make`` installs one of them with ``pip install --require-hashes``.

    python tools/lock.py compile [--upgrade | --upgrade-package NAME ...]   # `make lock`
    python tools/lock.py check [--offline]                                   # `make lock-check`

``compile`` keeps every pinned version that still satisfies pyproject.toml (uv reads the old
lock as preferences), so editing one requirement moves only what it has to; ``--upgrade``
re-resolves everything to the newest allowed releases.

Each lock carries, under uv's header, a digest of pyproject's dependency tables
(``requires-python``, ``dependencies``, ``optional-dependencies``, parsed, so comments and layout
do not count). ``check`` compares it first, offline: a dependency edited without ``make lock``
fails at once, with or without a network. Then, when the package index answers, it recompiles
each lock from its own pins into a temporary file and compares the ``name==version`` pins: this
catches a hand-edited lock. Hashes are not compared: a wheel uploaded later for a release that is
already pinned adds a hash without changing what gets installed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = "pyproject.toml"
LOCK_DIR = "requirements"
# lock name -> the extras it installs (TensorFlow comes from exactly one of cpu / gpu; the
# cpu lock also holds JAX for CPU, so CI runs the pipeline on the JAX backend too)
LOCKS = {"cpu": ("cpu", "dev", "jax"), "gpu": ("gpu", "dev")}
PYTHON_VERSION = "3.11"
COMPILE_COMMAND = "make lock"
DIGEST_PREFIX = "# pyproject-dependencies-sha256: "
DEFAULT_INDEX = "https://pypi.org/simple/"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


class LockError(RuntimeError):
    """A lock file is missing or disagrees with pyproject.toml."""


def dependency_digest(pyproject: Path) -> str:
    """sha256 of the parsed dependency tables: what a lock must be recompiled after."""
    project = tomllib.loads(pyproject.read_text())["project"]
    tables = {key: project.get(key) for key in
              ("requires-python", "dependencies", "optional-dependencies")}
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def lock_path(root: Path, name: str) -> Path:
    return root / LOCK_DIR / f"{name}.lock"


def recorded_digest(lock: Path) -> str | None:
    for line in lock.read_text().splitlines():
        if not line.startswith("#"):
            return None
        if line.startswith(DIGEST_PREFIX):
            return line[len(DIGEST_PREFIX):].strip()
    return None


def pins(text: str) -> dict[str, str]:
    """name -> version of every ``name==version`` line (names normalised as in PEP 503)."""
    found = {}
    for line in text.splitlines():
        match = PIN.match(line)
        if match:
            found[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(2)
    return found


def find_uv() -> str:
    """uv from the project venv (the dev extra pins it), else from PATH."""
    beside = Path(sys.executable).parent / "uv"
    if beside.exists():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        raise LockError("uv not found: install the dev extra (`make setup`) or `pip install uv`")
    return found


def uv_compile(root: Path, name: str, output: Path, extra_args: list[str], uv: str) -> None:
    command = [uv, "pip", "compile", PYPROJECT, "--generate-hashes", "--quiet",
               "--python-version", PYTHON_VERSION, "--python-platform", "linux",
               "--custom-compile-command", COMPILE_COMMAND, "-o", str(output)]
    for extra in LOCKS[name]:
        command += ["--extra", extra]
    # uv, not pip, reads these: the index is the public one unless the caller chose another
    subprocess.run(command + extra_args, cwd=root, check=True)


def compile_locks(root: Path, extra_args: list[str], names=tuple(LOCKS)) -> None:
    """(Re)write each lock and put the dependency digest under uv's header."""
    uv = find_uv()
    digest = dependency_digest(root / PYPROJECT)
    for name in names:
        lock = lock_path(root, name)
        lock.parent.mkdir(parents=True, exist_ok=True)
        uv_compile(root, name, lock, extra_args, uv)
        lines = [line for line in lock.read_text().splitlines(keepends=True)
                 if not line.startswith(DIGEST_PREFIX)]
        header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
        lines.insert(header, f"{DIGEST_PREFIX}{digest}\n")
        lock.write_text("".join(lines))
        print(f"{lock.relative_to(root)}: {len(pins(lock.read_text()))} packages")


def check_digests(root: Path, names=tuple(LOCKS)) -> None:
    digest = dependency_digest(root / PYPROJECT)
    for name in names:
        lock = lock_path(root, name)
        if not lock.exists():
            raise LockError(f"{lock.relative_to(root)} is missing: run `make lock`")
        if recorded_digest(lock) != digest:
            raise LockError(
                f"{lock.relative_to(root)} was compiled from other dependencies than "
                f"{PYPROJECT} now lists: run `make lock` and commit both files")


def index_reachable(timeout: float = 10.0) -> bool:
    url = os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or DEFAULT_INDEX
    if not url.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/pip/", timeout=timeout):
            return True
    except (urllib.error.URLError, OSError):
        return False


def check_pins(root: Path, names=tuple(LOCKS)) -> None:
    """Recompile each lock from its own pins; the pinned versions must come out the same."""
    uv = find_uv()
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            lock = lock_path(root, name)
            fresh = Path(tmp) / lock.name
            shutil.copyfile(lock, fresh)  # the pins become uv's preferences
            uv_compile(root, name, fresh, [], uv)
            before, after = pins(lock.read_text()), pins(fresh.read_text())
            if before != after:
                changed = sorted(
                    f"{pkg}: {before.get(pkg, '-')} -> {after.get(pkg, '-')}"
                    for pkg in before.keys() | after.keys() if before.get(pkg) != after.get(pkg))
                raise LockError(f"{lock.relative_to(root)} disagrees with {PYPROJECT} "
                                f"({'; '.join(changed)}): run `make lock` and commit both")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_parser = commands.add_parser("compile", help="write requirements/*.lock")
    compile_parser.add_argument("--upgrade", action="store_true",
                                help="newest allowed release of everything")
    compile_parser.add_argument("--upgrade-package", action="append", default=[],
                                metavar="NAME", help="newest allowed release of NAME")
    check_parser = commands.add_parser("check", help="fail if a lock disagrees with pyproject")
    check_parser.add_argument("--offline", action="store_true",
                              help="compare the dependency digest only")
    args = parser.parse_args(argv)
    try:
        if args.command == "compile":
            extra = ["--upgrade"] if args.upgrade else []
            for package in args.upgrade_package:
                extra += ["--upgrade-package", package]
            compile_locks(ROOT, extra)
            return 0
        check_digests(ROOT)
        if args.offline:
            print("locks match pyproject.toml (digest only, --offline)")
        elif not index_reachable():
            print("warning: the package index is unreachable; checked the dependency digest "
                  "only", file=sys.stderr)
        else:
            check_pins(ROOT)
            print("locks match pyproject.toml")
        return 0
    except (LockError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
