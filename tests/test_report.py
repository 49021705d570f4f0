"""The comparison report: sections, Table 2 layout, self-contained HTML, graceful gaps."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.labels import LABELS
from cxr.report import build, document

MODELS = ("simple_cnn", "densenet121", "efficientnetb0", "fusion")


def _tiny_png(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    pixels = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def _split_entry(images, patients, fraction, seed):
    rng = np.random.default_rng(seed)
    positives = {label: int(rng.integers(0, max(2, images // 8))) for label in LABELS}
    positives["Hernia"] = 0 if seed == 3 else 2  # test has no Hernia
    return {"images": images, "patients": patients, "image_fraction": fraction,
            "positives": positives,
            "prevalence": {label: round(n / images, 6) for label, n in positives.items()}}


def _eval(name: str, macro: float, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    auc = {label: round(float(np.clip(macro + rng.normal(0, 0.05), 0.5, 0.99)), 4)
           for label in LABELS}
    auc["Hernia"] = None
    return {
        "macro_auc": macro, "macro_auc_ci_low": macro - 0.04, "macro_auc_ci_high": macro + 0.04,
        "auc": auc,
        "auc_ci": {label: None if v is None else {"low": v - 0.05, "high": v + 0.05}
                   for label, v in auc.items()},
        "macro_auprc": macro / 3, "auprc": {label: 0.2 for label in LABELS},
        "sensitivity": {label: 0.7 for label in LABELS},
        "specificity": {label: 0.6 for label in LABELS},
        "threshold": {label: 0.3 for label in LABELS},
        "calibration": {"ece": 0.05 + seed / 100, "brier": 0.08 + seed / 200,
                        "per_class": {label: {"ece": 0.01 * (i + 1), "brier": 0.05}
                                      for i, label in enumerate(LABELS)}},
        "referral": {"curve": [{"referred_fraction": f, "kept_images": int(282 * (1 - f)),
                                "macro_auc": macro + 0.1 * f} for f in (0.0, 0.1, 0.2, 0.3)],
                     "gain_at_20": 0.02},
        "no_auc": {"Hernia": "no positives in split"},
        "n_images": 282, "n_patients": 133, "n_boot": 1000,
        "mc_dropout": {"passes": 30, "threshold": 0.1, "referred_images_fraction": 0.18,
                       "mean_std": 0.05},
        "subgroups": _subgroups(seed),
    }


def _subgroups(seed: int) -> dict:
    """The eval metrics' subgroup audit, computed on random scores of 282 test images."""
    from cxr.evaluation.subgroups import subgroup_audit

    rng = np.random.default_rng(seed)
    patients = rng.integers(0, 133, 282)
    y = (rng.random((282, len(LABELS))) < 0.15).astype(int)
    groups = {"sex": np.where(patients % 2, "M", "F"), "view": np.where(rng.random(282) < 0.4,
                                                                        "AP", "PA")}
    return subgroup_audit(y, rng.random(y.shape), patients, groups, np.full(len(LABELS), 0.5),
                          LABELS, min_images=30, min_positives=5, n_boot=50, seed=seed)


BOXED = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
         "Pneumonia", "Pneumothorax")  # the 8 findings NIH drew boxes for


def _localize(name: str, seed: int) -> dict:
    """metrics/localize/NAME.json: boxes for 8 findings; the others without boxes."""
    rng = np.random.default_rng(seed)
    per_finding = {}
    for label in LABELS:
        if label in BOXED:
            per_finding[label] = {"n": 20, "pointing": round(float(rng.uniform(0.2, 0.9)), 3),
                                  "iou_mean": round(float(rng.uniform(0.05, 0.4)), 3),
                                  "chance": 0.08, "flat": 1}
        else:
            per_finding[label] = {"n": 0, "pointing": None, "iou_mean": None, "chance": None,
                                  "flat": 0}
    pointing = float(np.mean([e["pointing"] for e in per_finding.values() if e["n"]]))
    iou = float(np.mean([e["iou_mean"] for e in per_finding.values() if e["n"]]))
    return {"model": name, "layer": "feature_map", "image_size": 64, "images_scored": 150,
            "test_images_with_boxes": 180, "boxes_scored": 160, "iou_threshold": 0.5,
            "seconds_per_heatmap": 0.0021 * (seed + 1), "per_finding": per_finding,
            "overall": {"n": 160, "pointing": pointing, "iou_mean": iou, "chance": 0.08,
                        "flat": 8, "pointing_macro": pointing, "iou_macro": iou}}


def example_context(tmp_path: Path, source: str = "phantoms") -> dict:
    """A realistic report context with tiny PNG figures under ``tmp_path``."""
    figures_dir = tmp_path / "plots"
    macros = {"simple_cnn": 0.61, "densenet121": 0.69, "efficientnetb0": 0.72, "fusion": 0.77}
    models = {}
    for number, name in enumerate(MODELS):
        models[name] = {
            "eval": _eval(name, macros[name], number),
            "train": {"val_macro_auc": macros[name] + 0.01,
                      "epochs": {"head": 3, "finetune": 5}, "train_seconds": 95.0 + number,
                      "train_images_per_second": 52.3, "parameters": 1_234_567 * (number + 1),
                      "mlflow_run_id": f"run{number}"},
            "localize": _localize(name, number),
            "figures": {key: _tiny_png(figures_dir / name / f"{key}.png", number * 10 + i)
                        for i, key in enumerate(("roc", "loss", "mc_histogram", "reliability",
                                                 "localize"))},
        }
    return {
        "title": "Chest X-ray classifier comparison",
        "generated": "2025-01-02T03:04:05+00:00",
        "data": {"source": source, "split": {
            "images": 1410, "patients": 500,
            "splits": {"train": _split_entry(981, 326, 0.695745, 1),
                       "val": _split_entry(147, 41, 0.104255, 2),
                       "test": _split_entry(282, 133, 0.2, 3)},
            "patient_overlap": {
                "train-val": {"shared_patients": 0, "val_images_with_patient_in_train": 0.0},
                "train-test": {"shared_patients": 0, "test_images_with_patient_in_train": 0.0},
                "val-test": {"shared_patients": 0, "test_images_with_patient_in_val": 0.0}},
            "leak_if_image_level": {"shared_patients": 121,
                                    "test_images_with_patient_in_train": 0.783688}}},
        "models": models,
        "comparisons": [
            {"a": "fusion", "b": "efficientnetb0", "difference": 0.05, "ci_low": 0.01,
             "ci_high": 0.09, "p_value": 0.012},
            {"a": "densenet121", "b": "simple_cnn", "difference": 0.08, "ci_low": -0.01,
             "ci_high": 0.16, "p_value": 0.08},
        ],
        "figures": {key: _tiny_png(figures_dir / f"{key}.png", 100 + i)
                    for i, key in enumerate(("referral", "reliability", "auc_comparison",
                                             "subgroups"))},
        "provenance": {"git_commit": "0123456789abcdef", "dvc_exp_name": "exp-tiny",
                       "mlflow_run_ids": {"split": "abc", "train@fusion": "def"},
                       "params": {"seed": 42, "data.source": source,
                                  "split.fractions": [0.7, 0.1, 0.2],
                                  "mlflow.tracking_uri": "http://127.0.0.1:5000"}},
    }


def _html_section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}">(.*?)</section>', page, re.S)
    assert match, section_id
    return match.group(1)


def _md_section(markdown: str, section_id: str) -> str:
    start = markdown.index(f'<a id="{section_id}"></a>')
    end = markdown.find('<a id="', start + 1)
    return markdown[start:end if end > 0 else None]


def test_every_section_has_its_id_and_heading_in_order(tmp_path):
    markdown, page = build.build_report(example_context(tmp_path))
    md_positions, html_positions = [], []
    for section_id, heading in document.SECTIONS:
        assert f'<a id="{section_id}"></a>' in markdown
        assert f"## {heading}" in markdown
        assert f'<section id="{section_id}">' in page
        assert f"<h2>{heading.replace(chr(39), '&#x27;')}</h2>" in page
        md_positions.append(markdown.index(f'<a id="{section_id}"></a>'))
        html_positions.append(page.index(f'<section id="{section_id}">'))
    assert md_positions == sorted(md_positions) and html_positions == sorted(html_positions)
    assert "could not be built" not in markdown
    assert "Note:" not in markdown, "a complete context must not produce notes"


def _html_table2(page: str) -> tuple[list[str], list[list[str]], str]:
    section = _html_section(page, "test-auc")
    table = re.search(r"<table>(.*?)</table>", section, re.S).group(1)
    header = re.findall(r"<tr>(.*?)</tr>", re.search(r"<thead>(.*?)</thead>", table, re.S)
                        .group(1), re.S)[-1]
    columns = re.findall(r"<th[^>]*>(.*?)</th>", header)
    body = re.search(r"<tbody>(.*?)</tbody>", table, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    return columns, rows, table


@pytest.mark.parametrize("source, comparable, label", [
    ("phantoms", None, document.PUBLISHED_LABEL_PHANTOMS),
    ("nih", None, document.PUBLISHED_LABEL_NOT_STUDY),   # what ran is not recorded
    ("nih", False, document.PUBLISHED_LABEL_NOT_STUDY),
    ("nih", True, document.PUBLISHED_LABEL_NIH)])
def test_table2_layout_and_published_label(tmp_path, source, comparable, label):
    context = example_context(tmp_path, source)
    if comparable is not None:
        context["data"]["comparability"] = {"comparable": comparable, "checks": []}
    markdown, page = build.build_report(context)
    columns, rows, table = _html_table2(page)
    names = [document.display_name(name) for name in MODELS]
    assert columns == (["Finding"] + names + [f"{n} {document.PUBLISHED_MARK}" for n in names])
    assert [row[0] for row in rows] == [*LABELS, "<strong>Macro AUC (95% CI)</strong>"]
    assert all(len(row) == len(columns) for row in rows)
    assert label in table
    assert (document.PUBLISHED_LABEL_PHANTOMS in table) == (source == "phantoms")
    # the published figures, typed in from the study's Table 2 (simple CNN,
    # DenseNet121, EfficientNetB0, fusion), not read from
    # PUBLISHED_STUDY: the macro row and two per-class rows
    macro = rows[-1]
    assert macro[-4:] == ["0.6558", "0.7096", "0.7363", "0.8156"]
    assert macro[4] == "<strong>0.770<br>(0.730–0.810)</strong>"  # fusion is best
    # per finding as published, to two decimals
    assert rows[LABELS.index("Cardiomegaly")][-4:] == ["0.68", "0.62", "0.74", "0.91"]
    assert rows[LABELS.index("Pneumonia")][-4:] == ["0.72", "0.73", "0.74", "0.65"]
    assert "per finding to two decimals and macro to four" in table
    assert "to be filled in" not in _html_section(page, "test-auc")
    hernia = rows[LABELS.index("Hernia")]
    assert all(cell == "n/a (no positives in split)" for cell in hernia[1:5])
    for row in rows[:-1]:  # exactly the best of this run's models is bold
        values = [float(re.sub(r"<.*?>", "", cell)) for cell in row[1:5] if "n/a" not in cell]
        bold = [float(re.sub(r"<.*?>", "", cell)) for cell in row[1:5] if "<strong>" in cell]
        assert bold == ([max(values)] * values.count(max(values)) if values else [])

    md_table = _md_section(markdown, "test-auc")
    assert label in md_table
    md_rows = [line for line in md_table.splitlines()
               if line.startswith("| ") and not line.startswith("| ---")]
    assert len(md_rows) == 1 + len(LABELS) + 1
    assert md_rows[0].count(" | ") == len(columns) - 1
    assert md_rows[-1].startswith("| **Macro AUC (95% CI)** |")


def test_html_is_self_contained_and_embeds_figures(tmp_path):
    _, page = build.build_report(example_context(tmp_path))
    for forbidden in ("http://", "https://", 'src="/', "<link", "<script", "@import", "url("):
        assert forbidden not in page, forbidden
    images = re.findall(r'<img src="([^"]*)"', page)
    # referral, reliability, AUC comparison, subgroups; 4 evaluation figures + 1 localize each
    assert len(images) == 4 + 5 * len(MODELS)
    assert all(re.match(r"data:image/(png|webp);base64,", src) for src in images)
    # the tracking URI in the params is still shown, as text
    assert "http&#58;//127.0.0.1:5000" in page


def _photo_like(path: Path, width: int, height: int) -> None:
    """A Grad-CAM-like grid: smooth gray anatomy with grain under a colour heatmap."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    gray = 128 + 90 * np.sin(23 * x) * np.cos(17 * y) + rng.normal(0, 12, (height, width))
    heat = np.exp(-((x - 0.3) ** 2 + (y - 0.2) ** 2) / 0.01)
    rgb = np.stack([gray + 120 * heat, gray, gray * (1 - 0.6 * heat)], axis=-1)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path)


def _chart(path: Path) -> None:
    """A matplotlib line chart at the figures' print resolution (1650 x 1100 px)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.33), dpi=150)
    axes = figure.add_subplot()
    rng = np.random.default_rng(3)
    for label in LABELS:
        axes.plot(np.sort(rng.random(60)), np.sort(rng.random(60)), label=label)
    axes.legend(fontsize=7)
    figure.savefig(path, format="png")


def _embedded(page: str, caption_start: str) -> bytes:
    import base64

    match = re.search(r'<img src="data:image/\w+;base64,([^"]+)" alt="' + re.escape(caption_start),
                      page)
    assert match, caption_start
    return base64.b64decode(match.group(1))


def test_html_embeds_large_figures_scaled_and_compressed(tmp_path):
    """The report stays light: large figures are scaled to 900 px and compressed, and decode."""
    import io

    context = example_context(tmp_path)
    grid = Path(context["models"]["fusion"]["figures"]["localize"])
    _photo_like(grid, 1800, 3600)
    chart = Path(context["figures"]["auc_comparison"])
    _chart(chart)
    assert grid.stat().st_size > 5_000_000 and chart.stat().st_size > 100_000
    grid_bytes, chart_bytes = grid.read_bytes(), chart.read_bytes()

    _, page = build.build_report(context)

    photo = _embedded(page, "Fusion: Grad-CAM")
    lines = _embedded(page, "Test ROC-AUC per finding")
    assert len(photo) < 600_000  # lossy: what a photograph needs
    assert len(lines) < 120_000
    assert b"VP8 " in photo[:40]  # lossy WebP for the photograph
    assert b"VP8L" in lines[:40]  # lossless (palette) WebP keeps the chart's lines and text
    for data, original in ((photo, grid), (lines, chart)):
        with Image.open(original) as before, Image.open(io.BytesIO(data)) as after:
            after.load()
            assert after.size == (900, round(before.height * 900 / before.width))
    # the figure files on disk are not touched; the whole page stays small
    assert grid.read_bytes() == grid_bytes and chart.read_bytes() == chart_bytes
    assert len(page.encode()) < 1_000_000


def test_compact_figure_writes_photograph_like_figures_lossy_even_when_a_palette_is_smaller():
    """A smooth photograph-like figure (more than PHOTO_COLORS colours) quantises into a few
    flat bands whose lossless palette WebP is tiny: it must still be written lossy (the
    palette would be banding, not lossless), while a chart keeps its palette."""
    import io

    from cxr.report.images import PHOTO_COLORS, compact_figure

    y, x = np.mgrid[0:600, 0:900]
    smooth = np.stack([x * 255 / 899, y * 255 / 599, (x + y) * 255 / 1498], axis=-1)
    buffer = io.BytesIO()
    Image.fromarray(smooth.astype(np.uint8)).save(buffer, "PNG")
    image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    assert image.getcolors(maxcolors=PHOTO_COLORS) is None  # photograph-like by the rule
    mime, data = compact_figure(buffer.getvalue())
    assert mime == "image/webp" and b"VP8 " in data[:40]
    # The same picture in 64 flat colours is chart-like: the palette form stays lossless.
    flat = image.quantize(64).convert("RGB")
    buffer = io.BytesIO()
    flat.save(buffer, "PNG")
    mime, data = compact_figure(buffer.getvalue())
    assert mime == "image/png" or b"VP8L" in data[:40]


def test_compact_figure_keeps_small_images_and_refuses_non_images(tmp_path):
    from cxr.report.images import compact_figure

    small = Path(_tiny_png(tmp_path / "small.png", 1))
    mime, data = compact_figure(small.read_bytes())
    assert mime in ("image/png", "image/webp") and len(data) <= small.stat().st_size
    assert compact_figure(b"not an image") is None
    with pytest.raises(ValueError, match="max_width"):
        compact_figure(small.read_bytes(), max_width=0)


def test_markdown_references_figures_relative_to_its_folder(tmp_path):
    context = example_context(tmp_path)
    md_path, html_path = build.write_report(context, tmp_path / "reports")
    assert md_path == tmp_path / "reports" / "report.md"
    markdown = md_path.read_text()
    targets = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert len(targets) == 4 + 5 * len(MODELS)  # as in the HTML test above
    assert "../plots/fusion/roc.png" in targets
    assert all((md_path.parent / target).is_file() for target in targets)
    assert "data:image" not in markdown
    assert html_path.read_text().startswith("<!DOCTYPE html>")


def test_missing_model_evaluation_and_figure_degrade_with_a_note(tmp_path):
    context = example_context(tmp_path)
    del context["models"]["densenet121"]["eval"]
    del context["models"]["simple_cnn"]["train"]
    Path(context["models"]["fusion"]["figures"]["roc"]).unlink()
    del context["figures"]["referral"]
    markdown, page = build.build_report(context)
    for text in (markdown, page):
        assert "No test evaluation for DenseNet121" in text
        assert "No training summary" in text
        assert "Figure not available: Fusion: per-finding ROC curves" in text
        assert "Figure not available: Referral curve" in text
        assert "could not be built" not in text
    columns, rows, _ = _html_table2(page)
    assert all(row[2] == document.MISSING for row in rows)  # DenseNet121 column


def test_empty_or_odd_context_never_crashes(tmp_path):
    for context in ({}, {"models": {}}, {"models": {"fusion": {}}},
                    {"models": {"fusion": {"eval": {"macro_auc": None}}}, "data": None},
                    {"models": {"fusion": {"eval": "garbage", "figures": None}},
                     "comparisons": [{"a": "fusion"}], "provenance": {"params": {"x": None}},
                     "data": {"split": {"splits": {"test": None}}}}):
        markdown, page = build.build_report(context)
        for section_id, _ in document.SECTIONS:
            assert f'<section id="{section_id}">' in page
            assert f'<a id="{section_id}"></a>' in markdown
        assert "Note:" in markdown


def test_text_is_escaped(tmp_path):
    context = example_context(tmp_path)
    context["title"] = "Report <script>alert(1)</script> & co"
    context["models"]["x<y>"] = copy.deepcopy(context["models"]["fusion"])
    context["models"]["x<y>"]["eval"]["no_auc"]["Hernia"] = "fewer <than> 1 & none"
    context["provenance"]["params"]["odd|key"] = "<b>bold?</b>"
    markdown, page = build.build_report(context)
    assert "<script>" not in page and "<b>bold?</b>" not in page
    assert "Report &lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    assert "x&lt;y&gt;" in page and "fewer &lt;than&gt; 1 &amp; none" in page
    assert "<script>" not in markdown and "x&lt;y&gt;" in markdown
    assert "odd\\|key" in markdown  # a pipe does not split the Markdown table


def test_localization_section_compares_models_per_finding(tmp_path):
    context = example_context(tmp_path)
    markdown, page = build.build_report(context)
    section = _html_section(page, "localization")
    header = re.search(r"<thead>(.*?)</thead>", section, re.S).group(1)
    for name in MODELS:
        assert f"{document.display_name(name)}: pointing" in header
    body = re.search(r"<tbody>(.*?)</tbody>", section, re.S).group(1)
    rows = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", body)]
    labels = [re.sub(r"</?strong>", "", row[0]) for row in rows]
    assert labels == list(BOXED) + ["All boxes (pooled)", "Mean over findings"]
    mass = rows[labels.index("Mass")]
    assert mass[1] == "20" and mass[2] == "0.080"
    expected = [f"{context['models'][m]['localize']['per_finding']['Mass']['pointing']:.3f}"
                for m in MODELS]
    assert [re.sub(r"</?strong>", "", cell) for cell in mass[3::2]] == expected
    assert sum("<strong>" in cell for cell in mass[3::2]) >= 1  # the best is bold
    assert "No boxes scored for: Consolidation, Edema" in section
    assert len(re.findall(r"data:image/(png|webp);base64,", section)) == len(MODELS)  # a grid each
    md_section = _md_section(markdown, "localization")
    assert "| Mass | 20 | 0.080 |" in md_section
    assert "feature_map" in md_section and "4.2 ms" in md_section


def test_localization_section_notes_missing_results(tmp_path):
    context = example_context(tmp_path)
    context["models"]["fusion"].pop("localize")
    markdown, _ = build.build_report(context)
    section = _md_section(markdown, "localization")
    assert "No localization results for Fusion." in section
    assert "Fusion: pointing" not in section
    for model in context["models"].values():
        model.pop("localize", None)
    markdown, _ = build.build_report(context)
    assert "No localization results (metrics/localize/NAME.json)" in markdown


def test_summary_names_the_best_model_and_its_interval(tmp_path):
    markdown, page = build.build_report(example_context(tmp_path))
    summary = _md_section(markdown, "summary")
    assert "**Fusion**, 0.770 (95% CI 0.730–0.810)" in summary
    assert "lead over EfficientNetB0 is +0.050" in summary
    assert "not comparable with the published study" in summary
    data = _html_section(page, "data")
    assert "78.4% of test images belong to a patient also in train" in data


def _find_chromium() -> str | None:
    return (shutil.which("chromium") or shutil.which("chromium-browser")
            or shutil.which("google-chrome"))


@pytest.mark.slow
def test_html_renders_offline_in_headless_chromium(tmp_path):
    binary = _find_chromium()
    if binary is None:
        pytest.skip("no chromium, chromium-browser or google-chrome on PATH "
                    "(CI installs chromium; locally: apt-get install -y chromium)")
    _, html_path = build.write_report(example_context(tmp_path), tmp_path / "reports")
    shot = tmp_path / "shot.png"
    command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
               "--window-size=1280,2000", html_path.resolve().as_uri()]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), (f"no screenshot after {time.monotonic() - started:.1f}s; "
                            f"rc={result.returncode}\n{result.stderr[-2000:]}")
    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.std() > 10, "screenshot is blank"
    assert (pixels < 128).mean() > 0.005, "no dark text on the page"


def test_a_best_at_or_below_chance_is_not_bold():
    from cxr.report.headline import _bold_best

    flat = _bold_best([(0.0, "0.000"), (0.0, "0.000")], floor=0.119)
    assert not any(cell.bold for cell in flat)
    weak = _bold_best([(0.5, "0.500"), (0.45, "0.450")], floor=0.5)
    assert not any(cell.bold for cell in weak)
    real = _bold_best([(0.61, "0.610"), (0.35, "0.350")], floor=0.119)
    assert [cell.bold for cell in real] == [True, False]


def test_the_committed_report_stays_under_its_2_mb_budget():
    """The pipeline's own report (committed, pipeline output of the committed params) is
    meant to be mailed and kept per experiment: 2 MB at most. It once grew to 2,151,548
    bytes when the Grad-CAM grids were kept as 64-colour palettes (docs/DESIGN.md)."""
    report = Path(__file__).resolve().parents[1] / "reports" / "report.html"
    if not report.is_file():
        pytest.skip("no committed reports/report.html in this checkout")
    assert report.stat().st_size <= 2_000_000, f"{report}: {report.stat().st_size:,} bytes"


def test_signed_numbers_never_print_a_negative_zero():
    from cxr.report.formatting import _signed

    assert _signed(-0.00004) == "+0.000"  # a tiny loss rounds to zero, printed without a sign flip
    assert _signed(-0.0) == "+0.000"
    assert _signed(-0.0006) == "-0.001"
    assert _signed(0.008) == "+0.008"
    assert _signed(None) == _signed(float("nan")) != "+0.000"


def test_localization_section_notes_coarse_maps_and_their_placement(tmp_path):
    context = example_context(tmp_path)
    localize = context["models"]["densenet121"]["localize"]
    localize.update(grid=[2, 2], placement="receptive-field centres",
                    unit_centres=[[[14.0, 46.0], [14.0, 46.0]]])
    context["models"]["fusion"]["localize"].update(grid=[7, 7])
    markdown, _ = build.build_report(context)
    section = _md_section(markdown, "localization")
    assert ("Coarse maps at this input size: DenseNet121 2 x 2 (receptive-field centres: "
            "14, 46 px). A heatmap then peaks at one of a few points") in section
    assert "Fusion 7 x 7" not in section  # not coarse
    for model in context["models"].values():
        model["localize"]["grid"] = [7, 7]
    markdown, _ = build.build_report(context)
    assert "Coarse maps" not in markdown


def test_a_real_data_run_is_compared_with_the_study_only_in_the_study_setting(tmp_path):
    from cxr.report.comparability import study_comparability

    epochs = {"simple_cnn": 25, "fusion": 25}
    study = study_comparability("nih", 55_995, 224, "imagenet", epochs, 0)
    assert study["comparable"]
    small = study_comparability("nih", 496, 64, "none", {"simple_cnn": 25, "fusion": 2}, 496)
    assert not small["comparable"]
    assert [c["what"] for c in small["checks"] if not c["met"]] == [
        "images", "image size", "files at that size", "initial weights", "epochs"]
    assert not study_comparability("phantoms", 55_995, 224, "imagenet", epochs, 0)["comparable"]
    assert not study_comparability("nih", 55_995, 224, "imagenet", epochs, None)["comparable"]

    context = example_context(tmp_path, "nih")
    context["data"]["comparability"] = small
    markdown, _ = build.build_report(context)
    assert "real NIH ChestX-ray14 images, but this run is not the study's setting" in markdown
    assert "image size 64 px (study: 224 px)" in markdown
    assert "can be set beside" not in markdown
    context["data"]["comparability"] = study
    markdown, _ = build.build_report(context)
    assert "the numbers can be set beside the published study's" in markdown
