"""README's real-data recipe, run as written, on a folder in the NIH download's layout.

A fresh copy of the repository gets a `data/raw/nih/` built from real NIH films
(tests/nih_layout.py: the v2020 CSV, BBox_List with its trailing empty columns and float
coordinates in the 1024 px frame, `images_001/images/*.png` at 1024, 512 and 64 px, gray, RGB
and RGBA), then the README's laptop block runs line by line, `make repro` included: the
params check, then `dvc repro` through the report. The only help it gets is the venv this
test runs in (make's VENV, and a set-up stamp so make does not reinstall it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from nih_layout import write_nih_layout

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- recipe: laptop"


def readme_recipe(readme: str) -> list[str]:
    """The commands of the fenced block that follows the recipe marker in README.md."""
    after = readme[readme.index(MARKER):]
    block = re.search(r"```bash\n(.*?)```", after, re.S)
    assert block, "README.md: no ```bash block after the recipe marker"
    return [line for line in block.group(1).splitlines() if line.strip()]


def copy_repository(out: Path) -> None:
    """What a clone holds: tracked files and files git does not ignore (uncommitted work)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, out / name)
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", "init", "-q"], cwd=out, check=True)
    subprocess.run(git + ["add", "-A"], cwd=out, check=True)
    subprocess.run(git + ["commit", "-qm", "clone"], cwd=out, check=True)


def test_the_readme_finds_its_recipe():
    commands = readme_recipe((REPO / "README.md").read_text())
    assert commands == ["cp configs/nih-laptop.yaml params.yaml", "make repro"]


@pytest.mark.slow
def test_readme_real_data_recipe_runs_to_the_report(tmp_path):
    project = tmp_path / "cxr"
    project.mkdir()
    copy_repository(project)
    layout = write_nih_layout(project / "data" / "raw" / "nih", patients=1000, seed=1)
    stamp = tmp_path / "venv-installed"
    stamp.touch()  # newer than the copied lock: make keeps the venv this test runs in
    env = {**os.environ, "MAKEFLAGS": f"VENV={Path(sys.prefix)} STAMP={stamp}"}
    for command in readme_recipe((REPO / "README.md").read_text()):
        done = subprocess.run(command, shell=True, cwd=project, env=env, text=True,
                              capture_output=True, timeout=1500)
        assert done.returncode == 0, f"{command}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"

    prepared = json.loads((project / "metrics/prepare.json").read_text())
    split = json.loads((project / "metrics/split.json").read_text())
    assert prepared["images"] == split["images"] > 50
    assert prepared["source_side_max"] >= 512 and prepared["upsampled"] == 0
    for name in ("simple_cnn", "densenet121", "efficientnetb0", "fusion"):
        evaluation = json.loads((project / f"metrics/eval/{name}.json").read_text())
        assert 0 <= evaluation["macro_auc"] <= 1
        localize = json.loads((project / f"metrics/localize/{name}.json").read_text())
        assert localize["boxes_in_file"] == layout.boxes and localize["boxes_scored"] > 0
        # Boxes scaled from the 1024 frame cover their real share of a 64 px input (NIH's
        # boxes average ~5%); read in a 64 px file's own pixels they would be a lone corner
        # pixel (1/4096).
        assert localize["overall"]["chance"] > 0.01
    report = (project / "reports/report.md").read_text()
    assert "real NIH ChestX-ray14 images, but this run is not the study's setting" in report
    assert "image size 64 px (study: 224 px)" in report
    assert f"{layout.boxes} boxes on" in report
    status = subprocess.run([str(Path(sys.prefix) / "bin" / "dvc"), "status"], cwd=project,
                            text=True, capture_output=True, check=True).stdout
    assert "changed" not in status, status
