"""The lock files (tools/lock.py): they record which pyproject dependencies they were compiled from."""

import importlib.util
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("lock_tool", ROOT / "tools" / "lock.py")
lock_tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock_tool)


def test_committed_locks_match_pyproject():
    """Offline half of `make lock-check`: edit a dependency, then run `make lock`."""
    lock_tool.check_digests(ROOT)
    cpu = lock_tool.pins((ROOT / "requirements/cpu.lock").read_text())
    gpu = lock_tool.pins((ROOT / "requirements/gpu.lock").read_text())
    assert "tensorflow-cpu" in cpu and "tensorflow" not in cpu
    assert "tensorflow" in gpu and "tensorflow-cpu" not in gpu
    for lock in (cpu, gpu):
        assert {"keras", "dvc", "mlflow", "pytest", "uv"} <= lock.keys()
        assert lock["mlflow"] == "3.17.2"


def test_every_pin_has_a_hash():
    for name in lock_tool.LOCKS:
        text = (ROOT / f"requirements/{name}.lock").read_text()
        blocks = [block for block in text.split("\n") if lock_tool.PIN.match(block)]
        assert blocks
        assert all(block.rstrip().endswith("\\") for block in blocks)  # hashes follow
        assert text.count("--hash=sha256:") >= len(blocks)


def _copy_project(tmp_path: Path) -> Path:
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for name in lock_tool.LOCKS:
        shutil.copy(ROOT / f"requirements/{name}.lock", tmp_path / f"requirements/{name}.lock")
    return tmp_path


def test_digest_ignores_layout_but_not_a_dependency(tmp_path):
    root = _copy_project(tmp_path)
    pyproject = root / "pyproject.toml"
    before = lock_tool.dependency_digest(pyproject)
    text = pyproject.read_text()
    pyproject.write_text("# a comment\n" + text.replace('description = "', 'description = "x '))
    assert lock_tool.dependency_digest(pyproject) == before
    lock_tool.check_digests(root)

    pyproject.write_text(text.replace('"pyyaml>=6,<7",', '"pyyaml>=6,<7",\n    "rich",'))
    assert lock_tool.dependency_digest(pyproject) != before
    with pytest.raises(lock_tool.LockError, match=r"cpu.lock .*run `make lock`"):
        lock_tool.check_digests(root)


def test_missing_lock_is_named(tmp_path):
    root = _copy_project(tmp_path)
    (root / "requirements/gpu.lock").unlink()
    with pytest.raises(lock_tool.LockError, match="gpu.lock is missing"):
        lock_tool.check_digests(root)


def test_pins_are_normalised():
    text = "Foo_Bar==1.2 \\\n    --hash=sha256:00\n# via x\nbaz.qux==3.0 ; python_version < '4'\n"
    assert lock_tool.pins(text) == {"foo-bar": "1.2", "baz-qux": "3.0"}
