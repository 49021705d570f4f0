"""`cxr predict`: table / JSON / CSV output, failure reports and exit codes (32 px simple_cnn)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.cli import main, unique_stems
from cxr.data.prepare import open_store, prepare_store
from cxr.evaluation.uncertainty import mc_dropout_predict
from cxr.labels import LABELS
from cxr.models import build
from cxr.models.metadata import model_metadata, write_metadata

SIZE = 32
CONSOLE_SCRIPT = Path(sys.executable).parent / "cxr"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> dict:
    """A saved model, a folder of good images (PNG gray/RGB/RGBA, a JPEG in a subfolder),
    a corrupt PNG, a truncated PNG and a text file the folder scan must ignore."""
    root = tmp_path_factory.mktemp("predict")
    model = build("simple_cnn", image_size=SIZE)
    model_path = root / "model.keras"
    model.save(model_path)
    # Operating thresholds spread over [0, 1] so some findings are positive and some not.
    write_metadata(root, model_metadata("simple_cnn", LABELS, SIZE, "block3_conv", "youden",
                                        OPERATING))
    folder = root / "xrays"
    (folder / "more").mkdir(parents=True)
    rng = np.random.default_rng(0)
    good = [folder / "gray.png", folder / "rgb.png", folder / "rgba.png", folder / "more" / "c.JPG"]
    Image.fromarray(rng.integers(0, 256, (40, 48), dtype=np.uint8)).save(good[0])
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(good[1])
    Image.fromarray(rng.integers(0, 256, (40, 48, 4), dtype=np.uint8)).save(good[2])
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(good[3], "JPEG")
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"this is not a PNG")
    truncated = folder / "truncated.png"
    truncated.write_bytes(good[1].read_bytes()[:200])
    (folder / "notes.txt").write_text("not an image")
    return {"model": str(model_path), "folder": str(folder), "good": [str(p) for p in good],
            "corrupt": str(corrupt), "truncated": str(truncated)}


OPERATING = [round(float(t), 3) for t in np.linspace(0.02, 0.98, len(LABELS))]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_table_lists_every_finding_of_every_readable_image(capsys, workspace):
    code, out, err = run(capsys, "predict", workspace["folder"], "--model", workspace["model"],
                         "--passes", 3)
    assert code == 1  # two unreadable files
    for name in workspace["good"]:
        assert f"{name}  refer:" in out
    assert "notes.txt" not in out + err
    finding_lines = [line for line in out.splitlines()
                     if line.strip().split(" ")[0] in LABELS]
    assert len(finding_lines) == 14 * len(workspace["good"])
    # Aligned: the mean column starts at the same offset on every line.
    assert len({line.index(line.split()[1]) for line in finding_lines}) == 1
    assert (f"skipped {workspace['corrupt']}: cannot decode the image (cannot identify image "
            "file") in err
    assert f"skipped {workspace['truncated']}: cannot decode the image (" in err
    assert "{{function_node" not in err


def test_json_matches_mc_dropout_predict(capsys, workspace, tmp_path):
    code, out, _ = run(capsys, "predict", *workspace["good"], "--model", workspace["model"],
                       "--passes", 4, "--seed", 3, "--json")
    assert code == 0
    rows = json.loads(out)
    assert [row["image"] for row in rows] == workspace["good"]
    assert [f["finding"] for f in rows[0]["findings"]] == list(LABELS)
    model = build("simple_cnn", image_size=SIZE)
    model.load_weights(workspace["model"])
    # The pixels the prepare stage stores for these files, gray expanded to 3 channels.
    prepare_store(workspace["good"], [Path(p).name for p in workspace["good"]], SIZE,
                  tmp_path / "store", progress=None)
    store = open_store(tmp_path / "store")
    images = np.repeat(np.asarray(store.images)[..., None], 3, axis=-1)
    expected = mc_dropout_predict(model, images, passes=4, seed=3)
    got_mean = np.array([[f["mean"] for f in row["findings"]] for row in rows])
    got_std = np.array([[f["std"] for f in row["findings"]] for row in rows])
    np.testing.assert_allclose(got_mean, expected.mean, atol=2e-6)
    np.testing.assert_allclose(got_std, expected.std, atol=2e-6)


def test_json_top_k_sorted_and_referral(capsys, workspace):
    code, out, _ = run(capsys, "predict", workspace["good"][0], "--model", workspace["model"],
                       "--passes", 5, "--top", 3, "--threshold", 0, "--json")
    assert code == 0
    (row,) = json.loads(out)
    means = [f["mean"] for f in row["findings"]]
    assert len(means) == 3 and means == sorted(means, reverse=True)
    assert all(f["refer"] == (f["std"] > 0) for f in row["findings"])
    # Each shown finding carries the model's operating threshold (metadata.json) and whether
    # its mean reaches it; `positive` lists every finding that does, shown or not.
    operating = dict(zip(LABELS, OPERATING, strict=True))
    assert all(f["threshold"] == operating[f["finding"]] for f in row["findings"])
    assert all(f["positive"] == (f["mean"] >= f["threshold"]) for f in row["findings"])
    assert set(row["positive"]) >= {f["finding"] for f in row["findings"] if f["positive"]}
    assert "Atelectasis" in row["positive"] and "Pneumothorax" not in row["positive"]
    assert row["refer_any"] is True  # dropout 0.5 gives every finding some spread
    assert len(row["referred"]) >= 3


def test_csv_long_format(capsys, workspace):
    code, out, err = run(capsys, "predict", workspace["good"][1], workspace["good"][2],
                         "--model", workspace["model"], "--passes", 2, "--csv", "--top", 5)
    assert code == 0 and "skipped" not in err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["image", "finding", "mean", "std", "refer", "threshold", "positive"]
    assert len(rows) == 10
    assert {row["image"] for row in rows} == set(workspace["good"][1:3])
    assert all(row["refer"] in ("0", "1") and 0 <= float(row["mean"]) <= 1 for row in rows)
    assert all(row["positive"] == str(int(float(row["mean"]) >= float(row["threshold"])))
               for row in rows)


def test_table_shows_the_operating_point(capsys, workspace):
    code, out, _ = run(capsys, "predict", workspace["good"][0], "--model", workspace["model"],
                       "--passes", 2)
    assert code == 0
    assert "positive when mean >= the youden threshold of validation" in out
    header = next(line for line in out.splitlines() if line.startswith(workspace["good"][0]))
    assert "  positive: Atelectasis" in header  # threshold 0.02: always reached
    line = next(line for line in out.splitlines() if line.strip().startswith("Pneumothorax"))
    assert line.split()[2:4] == ["0.980", "-"]  # finding, mean, thresh, positive, std, refer


@pytest.mark.parametrize("thresholds, message", [
    ({"Atelectasis": 0.5}, "labels without one"),
    ("bad", "got str"),
    ({**dict.fromkeys(LABELS, 0.5), "Cardiomegally": 0.5}, "keys that are not labels: "
                                                            "\\['Cardiomegally'\\]"),
    ({label: 1.5 for label in LABELS}, "numbers in \\[0, 1\\]"),
])
def test_bad_operating_thresholds_are_a_clear_error(capsys, workspace, tmp_path, thresholds,
                                                    message):
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(workspace["model"], folder / "model.keras")
    metadata = model_metadata("simple_cnn", LABELS, SIZE, "block3_conv", "youden", OPERATING)
    metadata["thresholds"] = thresholds
    write_metadata(folder, metadata)
    code, _, err = run(capsys, "predict", workspace["good"][0], "--model",
                       folder / "model.keras")
    assert code == 2
    assert "cannot use model" in err and "thresholds" in err
    assert re.search(message, err)


def test_nothing_readable_exits_2(capsys, workspace, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, out, err = run(capsys, "predict", workspace["corrupt"], empty, tmp_path / "gone.png",
                         "--model", workspace["model"])
    assert code == 2 and out == ""
    assert f"skipped {workspace['corrupt']}:" in err
    assert f"skipped {empty}: folder holds no .png/.jpg/.jpeg or DICOM files" in err
    assert f"skipped {tmp_path / 'gone.png'}: no such file or folder" in err
    assert "no image could be read" in err


def test_missing_or_broken_model_is_a_clear_error(capsys, workspace, tmp_path):
    code, out, err = run(capsys, "predict", workspace["good"][0],
                         "--model", tmp_path / "nope.keras")
    assert code == 2 and out == ""
    assert f"model file not found: {tmp_path / 'nope.keras'}" in err
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    code, _, err = run(capsys, "predict", workspace["good"][0], "--model", broken)
    assert code == 2 and f"cannot use model {broken}" in err


def test_model_without_metadata_is_a_clear_error(capsys, workspace, tmp_path):
    shutil.copy(workspace["model"], tmp_path / "model.keras")
    code, out, err = run(capsys, "predict", workspace["good"][0],
                         "--model", tmp_path / "model.keras")
    assert code == 2 and out == ""
    assert "metadata.json not found: the train stage writes it beside model.keras" in err


def test_heatmap_writes_an_overlay_per_image_and_top_finding(capsys, workspace, tmp_path):
    out_dir = tmp_path / "heat" / "maps"  # created, parents too
    code, out, err = run(capsys, "predict", *workspace["good"], "--model", workspace["model"],
                         "--passes", 2, "--json", "--heatmap", out_dir)
    assert code == 0
    rows = json.loads(out)  # stdout stays pure JSON; the summary goes to stderr
    assert f"wrote {3 * len(workspace['good'])} heatmap overlays to {out_dir}" in err
    for row in rows:
        stem = Path(row["image"]).stem
        means = sorted(((f["mean"], f["finding"]) for f in row["findings"]), reverse=True)
        top3 = {finding for _, finding in means[:3]}
        with_heatmap = {f["finding"]: f["heatmap"] for f in row["findings"] if "heatmap" in f}
        assert set(with_heatmap) == top3  # all 14 listed, the top 3 drawn
        for finding, path in with_heatmap.items():
            assert path == str(out_dir / f"{stem}_{finding}.png")
            with Image.open(path) as image:
                assert image.format == "PNG" and image.size[0] > 100
    assert len(list(out_dir.iterdir())) == 3 * len(workspace["good"])


def test_heatmap_follows_top_and_keeps_same_stems_apart(capsys, workspace, tmp_path):
    twin = tmp_path / "other" / Path(workspace["good"][0]).name
    twin.parent.mkdir()
    twin.write_bytes(Path(workspace["good"][0]).read_bytes())
    code, out, err = run(capsys, "predict", workspace["good"][0], twin, "--model",
                         workspace["model"], "--passes", 2, "--top", 1, "--heatmap", tmp_path / "h")
    assert code == 0 and "wrote 2 heatmap overlays" in err
    names = sorted(path.name for path in (tmp_path / "h").iterdir())
    assert len(names) == 2 and names[0].startswith("gray-2_") and names[1].startswith("gray_")
    assert "gray.png  refer:" in out  # the table is printed as without --heatmap


def test_unwritable_heatmap_folder_exits_2(capsys, workspace, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    code, out, err = run(capsys, "predict", workspace["good"][0], "--model", workspace["model"],
                         "--heatmap", blocker / "sub")
    assert code == 2 and out == ""
    assert f"cannot create the heatmap folder {blocker / 'sub'}" in err


def test_unique_stems():
    assert unique_stems(["a/x.png", "b/x.png", "c/x-2.png", "y.jpg", "d/x.jpg"]) == [
        "x", "x-2", "x-2-2", "y", "x-3"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["predict", "x.png", "--passes", "0"], "--passes: must be >= 1"),
        (["predict", "x.png", "--threshold", "-1"], "--threshold: must be >= 0.0"),
        (["predict", "x.png", "--top", "two"], "--top: expected an integer"),
        (["predict", "x.png", "--top", "15"], "--top: must be in [1, 14]"),
        (["predict", "x.png", "--json", "--csv"], "not allowed with argument"),
        (["predict"], "the following arguments are required: PATH"),
    ],
)
def test_bad_arguments_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "predict" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="console script not installed")
def test_console_script(workspace):
    completed = subprocess.run(
        [str(CONSOLE_SCRIPT), "predict", workspace["good"][0], workspace["corrupt"],
         "--model", workspace["model"], "--passes", "2", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 1, completed.stderr
    assert json.loads(completed.stdout)[0]["image"] == workspace["good"][0]
    assert f"skipped {workspace['corrupt']}:" in completed.stderr
