"""`dvc repro split` on the real-data settings: no official lists, no phantoms.

With data.source nih, data.check_images false and split.method iterative, the split stage must
run from the Data_Entry CSV alone (no train_val_list.txt / test_list.txt anywhere) and the
phantom generator must not run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxr.data.phantoms import PhantomConfig, generate_phantoms

REPO = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")


@pytest.mark.slow
def test_dvc_repro_split_on_nih_settings_needs_no_lists_and_no_phantoms(tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, project / name)
    for folder in ("stages", "src", "configs"):
        shutil.copytree(REPO / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    # An NIH-layout CSV somewhere else, as a download would be (its images are not needed).
    nih = tmp_path / "nih"
    generate_phantoms(nih, PhantomConfig(n_patients=40, image_size=32))
    for stale in ("train_val_list.txt", "test_list.txt"):
        (nih / stale).unlink()
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(source="nih", csv=str(nih / "Data_Entry_2017.csv"),
                          images_dir=str(tmp_path / "not_downloaded"), check_images=False,
                          bbox_csv=str(nih / "BBox_List_2017.csv"))
    assert params["split"]["method"] == "iterative"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=project, check=True)
    env_path = f"{Path(sys.executable).parent}:{subprocess.os.environ.get('PATH', '')}"
    done = subprocess.run([str(DVC), "repro", "split"], cwd=project, capture_output=True,
                          text=True, timeout=600, env={**subprocess.os.environ, "PATH": env_path})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Running stage 'phantoms'" not in done.stdout
    assert not (project / "data/raw/phantoms").exists()
    split = (project / "data/processed/split.csv").read_text().splitlines()
    assert len(split) > 40 and split[0].endswith(",split")


def test_the_placeholder_list_is_empty():
    """The split stage refuses the placeholder when split.method is official (an empty file);
    with method iterative it is the dependency that stands in for the lists."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key in ("official_train_val_list", "official_test_list"):
        assert (REPO / params["split"][key]).stat().st_size == 0
