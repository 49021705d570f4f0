"""The report figures: each writes a readable PNG, copes with a finding without positives."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cxr.labels import LABELS
from cxr.report import plots

MODELS = ("simple_cnn", "densenet121", "efficientnetb0", "fusion")
HERNIA = LABELS.index("Hernia")


def _check_png(path, min_size=(300, 200)):
    assert path.is_file() and path.stat().st_size > 2_000
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1]
        assert image.width <= 3000 and image.height <= 3000
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 5, "figure is blank"


def _labels_and_scores(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y_true = (rng.random((n, len(LABELS))) < 0.2).astype(int)
    y_true[:, HERNIA] = 0  # a finding without positives
    y_score = np.clip(0.35 * y_true + 0.65 * rng.random(y_true.shape), 0, 1)
    return y_true, y_score


def test_roc_curves_writes_png_and_handles_class_without_positives(tmp_path):
    y_true, y_score = _labels_and_scores()
    path = plots.roc_curves(y_true, y_score, LABELS, "DenseNet121: test ROC",
                            tmp_path / "sub" / "roc.png")
    assert path == tmp_path / "sub" / "roc.png"
    _check_png(path)


def test_roc_curve_points_match_sklearn_auc_with_ties():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    score = np.round(rng.random(200) + 0.3 * y, 1)  # rounding makes many ties
    fpr, tpr, auc = plots.roc_curve_points(y, score)
    assert auc == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert plots.roc_curve_points(np.zeros(5), np.arange(5))[2] is None


def test_roc_curves_rejects_wrong_shapes_naming_the_argument(tmp_path):
    y_true, y_score = _labels_and_scores()
    with pytest.raises(ValueError, match="y_score"):
        plots.roc_curves(y_true, y_score[:, :3], LABELS, "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="y_true"):
        plots.roc_curves(y_true[:, :3], y_score, LABELS, "t", tmp_path / "x.png")


def test_loss_curves_with_two_phases_and_gaps(tmp_path):
    rows = [{"step": i + 1, "phase": "head" if i < 3 else "finetune",
             "loss": 1 / (i + 1), "val_loss": 1.1 / (i + 1),
             "auc": 0.5 + 0.03 * i, "val_auc": None if i == 2 else 0.5 + 0.02 * i}
            for i in range(8)]
    _check_png(plots.loss_curves(rows, "Fusion: training", tmp_path / "loss.png"))


def test_loss_curves_without_auc_and_with_epoch_key(tmp_path):
    rows = [{"epoch": i + 1, "phase": "head", "loss": 1 / (i + 1), "val_loss": 1 / (i + 2)}
            for i in range(3)]
    _check_png(plots.loss_curves(rows, "no AUC logged", tmp_path / "loss.png"))
    with pytest.raises(ValueError, match="history_rows"):
        plots.loss_curves([], "empty", tmp_path / "empty.png")


def test_mc_histogram_for_one_image(tmp_path):
    rng = np.random.default_rng(2)
    samples = np.clip(rng.normal(np.linspace(0.05, 0.9, len(LABELS)), 0.05,
                                 size=(30, len(LABELS))), 0, 1)
    samples[:, HERNIA] = 0.0  # constant column: zero spread must not break the bins
    _check_png(plots.mc_histogram(samples, LABELS, "EfficientNetB0: one image",
                                  tmp_path / "mc.png"))
    _check_png(plots.mc_histogram(samples[:1], LABELS, "one pass", tmp_path / "mc1.png", top=1),
               min_size=(200, 200))
    with pytest.raises(ValueError, match="samples"):
        plots.mc_histogram(samples[:, :5], LABELS, "t", tmp_path / "bad.png")
    with pytest.raises(ValueError, match="top"):
        plots.mc_histogram(samples, LABELS, "t", tmp_path / "bad.png", top=0)


def _reliability_curve(slope):
    means = np.linspace(0.05, 0.95, 10)
    return {"bin_mean_prob": list(means), "bin_fraction_positive": list(np.clip(means * slope,
                                                                                  0, 1)),
            "bin_count": [90, 40, 20, 10, 6, 4, 2, 1, 1, 1]}


def test_reliability_diagram_by_model_and_by_class_with_empty_bins(tmp_path):
    by_model = {name: _reliability_curve(0.7 + 0.1 * i) for i, name in enumerate(MODELS)}
    _check_png(plots.reliability_diagram(by_model, "Reliability", tmp_path / "rel.png"))
    by_class = {label: _reliability_curve(1.0) for label in LABELS}
    # Hernia without positives: empty bins come as None / count 0
    by_class["Hernia"] = {"bin_mean_prob": [None, 0.1], "bin_fraction_positive": [None, 0.0],
                          "bin_count": [0, 0]}
    _check_png(plots.reliability_diagram(by_class, "Per finding", tmp_path / "rel_class.png"))
    with pytest.raises(ValueError, match="curves"):
        plots.reliability_diagram({"fusion": {"bin_mean_prob": [0.1]}}, "t", tmp_path / "x.png")


def test_referral_curves(tmp_path):
    curves = {name: [{"referred_fraction": f, "kept_images": int(100 * (1 - f)),
                      "macro_auc": 0.6 + 0.05 * i + 0.1 * f}
                     for f in np.linspace(0, 0.5, 11)] for i, name in enumerate(MODELS)}
    curves["fusion"].append({"referred_fraction": 0.9, "macro_auc": None})
    _check_png(plots.referral_curves(curves, "Referral", tmp_path / "ref.png"))


def test_auc_comparison_with_missing_values(tmp_path):
    rng = np.random.default_rng(3)
    table = {name: {label: float(rng.uniform(0.5, 0.9)) for label in LABELS} for name in MODELS}
    for row in table.values():
        row["Hernia"] = None
    _check_png(plots.auc_comparison(table, tmp_path / "cmp.png"))


def test_styles_are_distinct():
    styles = [(plots.class_style(label)["color"], plots.class_style(label)["linestyle"])
              for label in LABELS]
    assert len({color for color, _ in styles}) == len(LABELS)
    assert [style for _, style in styles] == ["-"] * 7 + ["--"] * 7
    known = [plots.model_color(name) for name in MODELS]
    assert len(set(known)) == len(MODELS)
    # a model outside the four never borrows a known model's colour
    assert all(plots.model_color(f"model_{i}") not in known for i in range(20))


def test_styles_are_the_same_in_every_process():
    """Figures drawn by different stages (separate processes, each with its own str-hash
    seed) must agree: a style derived from hash() would differ between the two runs here."""
    names = ["another_model", "resnet50", "vit"]
    findings = ["Some finding", "Infiltrate"]
    code = ("import json, sys; from cxr.report import plots; "
            f"print(json.dumps([[plots.model_color(n) for n in {names!r}], "
            f"[plots.class_style(f) for f in {findings!r}]]))")
    outputs = []
    for seed in ("1", "2"):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True, env={**os.environ, "PYTHONHASHSEED": seed})
        outputs.append(json.loads(result.stdout))
    here = [[plots.model_color(n) for n in names], [plots.class_style(f) for f in findings]]
    assert outputs[0] == outputs[1] == here


def test_plots_do_not_import_tensorflow_or_pyplot():
    code = ("import sys, cxr.report.plots, cxr.report; "
            "print(any(m == 'tensorflow' or m.startswith('tensorflow.') for m in sys.modules), "
            "'matplotlib.pyplot' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.split() == ["False", "False"]
