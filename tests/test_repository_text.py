"""The tracked text describes the project, not how it was made, and points nowhere outside it.

Every file `git ls-files` lists (lock files and binary files aside) is searched for words
about the work that produced the repository (numbered work items: "stop" or "issue" and a
number) and for paths into the folder beside the checkout, which is not part of the
repository. The patterns are assembled from pieces so that this file does not match itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_WORK_ITEM = "|".join(("st" + "op", "iss" + "ue"))
PATTERNS = {
    "a numbered work item": re.compile(rf"\b(?:{_WORK_ITEM})[ -]#?[0-9]+\b", re.IGNORECASE),
    "a path outside the repository": re.compile(re.escape("../" + "shared")),
}


def tracked_text_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    files = []
    for name in filter(None, listed):
        path = ROOT / name
        if path.suffix == ".lock" or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" in head:
            continue  # binary
        files.append(path)
    return files


def test_patterns_catch_what_they_are_meant_to():
    work, outside = PATTERNS.values()
    for text in ("St" + "op 26", "st" + "op-24 models", "ISS" + "UE 11", "iss" + "ue #3"):
        assert work.search(text), text
    for text in ("early stopping at epoch 15", "stops after 4 epochs", "an issue with 3 files"):
        assert not work.search(text), text
    assert outside.search("see .." + "/shared/DESIGN.md")


def test_no_tracked_file_mentions_work_items_or_paths_outside_the_repository():
    hits = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            for what, pattern in PATTERNS.items():
                if pattern.search(line):
                    hits.append(f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()[:120]}")
    assert not hits, "\n".join(hits)
