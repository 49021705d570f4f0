"""The DVC cache links outputs instead of copying them (`.dvc/config`: hardlink, else copy),
so the prepared store is not held twice (2.8 GB at 224 px on the real data). A hardlink is the
cache file itself: DVC makes it read-only, and a stage that wrote into it in place would
corrupt the cache. The prepare stage never does (a new store is written into a temp dir and
renamed over the old one); this test runs a store-writing stage twice under the repository's
own cache config and checks every cache object still hashes to its name. (Reflink first, as
in "reflink,hardlink,copy", makes DVC 3.67 copy a directory output when the file system has
no reflinks, as ext4 has not: the store would be held twice.)
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
STAGE = """
import sys
import numpy as np
from PIL import Image
from cxr.data.prepare import prepare_store
size = int(sys.argv[1])
rng = np.random.default_rng(0)
paths = []
for i in range(6):
    path = f"img{i}.png"
    Image.fromarray(rng.integers(0, 256, (80, 80), dtype=np.uint8)).save(path)
    paths.append(path)
prepare_store(paths, [f"{i:08d}_000.png" for i in range(6)], size, "store", progress=None)
"""


def _run(*args, cwd):
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout


def _cache_objects(project: Path):
    for path in (project / ".dvc" / "cache" / "files" / "md5").rglob("*"):
        if path.is_file() and not path.name.endswith(".dir"):
            yield path


@pytest.mark.slow
def test_linked_store_cache_survives_a_rerun(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    _run("git", "init", "-q", cwd=project)
    _run(DVC, "init", "-q", cwd=project)
    config = (REPO / ".dvc" / "config").read_text()
    cache_type = next(line.split("=", 1)[1].strip().strip('"') for line in config.splitlines()
                      if line.strip().startswith("type"))
    assert cache_type == "hardlink,copy"
    _run(DVC, "config", "cache.type", cache_type, cwd=project)
    (project / "stage.py").write_text(STAGE)
    (project / "params.yaml").write_text("size: 32\n")
    (project / "dvc.yaml").write_text(
        "stages:\n  prepare:\n    cmd: python stage.py ${size}\n    deps: [stage.py]\n"
        "    params: [size]\n    outs: [store]\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run([DVC, "repro", "-q"], cwd=project, check=True, env=env)
    images = project / "store" / "images.npy"
    assert images.stat().st_nlink == 2, "the store should be a hardlink into the cache"
    assert not images.stat().st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    first = images.read_bytes()

    (project / "params.yaml").write_text("size: 40\n")
    subprocess.run([DVC, "repro", "-q"], cwd=project, check=True, env=env)
    assert images.read_bytes() != first
    objects = list(_cache_objects(project))
    assert len(objects) == 5  # both stores: images.npy and store.json twice, index.csv once
    for path in objects:
        assert hashlib.md5(path.read_bytes()).hexdigest() == path.parent.name + path.name, path
    # The first store is still whole in the cache: going back checks it out unchanged.
    (project / "params.yaml").write_text("size: 32\n")
    subprocess.run([DVC, "repro", "-q"], cwd=project, check=True, env=env)
    assert images.read_bytes() == first
