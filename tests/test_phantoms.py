"""The phantom generator: NIH layout, determinism, label statistics, learnable signs."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxr.data import nih
from cxr.data.phantoms import (
    BBOX_HEADER,
    DATA_ENTRY_HEADER,
    PhantomConfig,
    generate_phantoms,
    plan_dataset,
    render_image,
    sample_anatomy,
)
from cxr.labels import INDEX, LABELS, NO_FINDING, canonical, decode, encode

# The few NIH statistics the plan is compared with, copied from the real
# Data_Entry_2017_v2020.csv's aggregate statistics so that this test never skips.
REFERENCE = Path(__file__).resolve().parent / "data" / "nih_reference_stats.json"
SMALL = PhantomConfig(n_patients=40, image_size=64, seed=3, label_noise=0.0, min_positives=3)
IMAGE_INDEX = re.compile(r"^(\d{8})_(\d{3})\.png$")


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _truth(out: Path) -> dict[str, str]:
    return {name: labels for name, labels in _rows(out / "phantom_truth.csv")[1:]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict, list[str]]:
    out = tmp_path_factory.mktemp("phantoms")
    messages: list[str] = []
    summary = generate_phantoms(out, SMALL, progress=messages.append)
    return out, summary, messages


# ---- layout ----------------------------------------------------------------------------------
def test_data_entry_has_the_nih_v2020_layout(dataset):
    out, summary, _ = dataset
    lines = (out / "Data_Entry_2017.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == DATA_ENTRY_HEADER
    assert lines[0] == ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,"
                        "Patient Gender,View Position,OriginalImage[Width,Height],"
                        "OriginalImagePixelSpacing[x,y]")
    rows = _rows(out / "Data_Entry_2017.csv")[1:]
    assert len(rows) == summary["images"] > SMALL.n_patients
    for row in rows:
        assert len(row) == 11, row
        name, labels, follow_up, patient, age, gender, view, width, height, sx, sy = row
        match = IMAGE_INDEX.match(name)
        assert match, name
        assert int(match.group(1)) == int(patient) and int(match.group(2)) == int(follow_up)
        assert decode(encode(labels)) == labels  # valid names, canonical order, or No Finding
        assert 1 <= int(age) <= 99 and gender in {"M", "F"} and view in {"PA", "AP"}
        # The film's size, like NIH's (over 1024 px), never the PNG's
        assert 2021 <= int(width) <= 3056 and 2021 <= int(height) <= 3056
        assert 0.115 <= float(sx) == float(sy) <= 0.199
    assert [row[0] for row in rows] == sorted(row[0] for row in rows)
    patients = [int(row[3]) for row in rows]
    assert patients == sorted(patients)  # patient order, as NIH's rows
    assert len({row[3] for row in rows}) == SMALL.n_patients


def test_images_are_8bit_grayscale_of_the_configured_size(dataset):
    out, _, _ = dataset
    names = [row[0] for row in _rows(out / "Data_Entry_2017.csv")[1:]]
    folder = out / "images_001" / "images"
    assert sorted(p.name for p in folder.iterdir()) == names
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["images_001"]
    for name in names[:: max(1, len(names) // 25)]:
        with Image.open(folder / name) as image:
            assert image.format == "PNG" and image.mode == "L"
            assert image.size == (SMALL.image_size, SMALL.image_size)


def test_bbox_list_has_the_nih_layout_and_a_box_for_every_drawn_finding(dataset):
    out, summary, _ = dataset
    lines = (out / "BBox_List_2017.csv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == BBOX_HEADER == "Image Index,Finding Label,Bbox [x,y,w,h],,,"
    boxed = set()
    for row in _rows(out / "BBox_List_2017.csv")[1:]:
        assert len(row) == 9 and row[6:] == ["", "", ""], row
        assert row[1] != "Infiltration"  # the real file writes "Infiltrate"
        x, y, w, h = map(float, row[2:6])
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= 1024 and y + h <= 1024  # NIH's frame, whatever the PNGs' size
        boxed.add((row[0], canonical(row[1])))
    drawn = {(name, finding) for name, labels in _truth(out).items()
             for finding in labels.split("|") if labels != NO_FINDING}
    assert boxed == drawn and len(drawn) == summary["boxes"]
    assert any(label == "Infiltrate" for _, label, *_ in _rows(out / "BBox_List_2017.csv")[1:])


def test_without_label_noise_the_csv_labels_are_the_drawn_truth(dataset):
    out, _, _ = dataset
    published = {row[0]: row[1] for row in _rows(out / "Data_Entry_2017.csv")[1:]}
    assert published == _truth(out)


def test_the_nih_reader_reads_the_phantoms_unchanged(dataset):
    out, summary, _ = dataset
    table = nih.read_data_entry(out / "Data_Entry_2017.csv")
    assert len(table) == summary["images"]
    boxes = nih.read_bbox_list(out / "BBox_List_2017.csv")
    assert len(boxes) == summary["boxes"]
    assert "Infiltration" in set(boxes["Finding Label"]) or summary["true_positives"][
        "Infiltration"] == 0


def test_official_lists_partition_the_images_by_patient(dataset):
    from cxr.data.nih import read_data_entry, read_image_list
    from cxr.data.splitting import split_official

    out, summary, _ = dataset
    train_val = read_image_list(out / "train_val_list.txt")
    test = read_image_list(out / "test_list.txt")
    assert len(train_val) + len(test) == summary["images"]
    assert not set(train_val) & set(test)
    table = read_data_entry(out / "Data_Entry_2017.csv")
    patient = dict(zip(table["Image Index"], table["Patient ID"], strict=True))
    assert not {patient[n] for n in train_val} & {patient[n] for n in test}
    assert 0.1 < len(test) / summary["images"] < 0.35
    # The split stage reads them as NIH's own lists.
    from cxr.data.nih import encode_labels

    split = split_official(encode_labels(table, "phantoms"), train_val, test, val_fraction=0.125)
    assert set(split) == {"train", "val", "test"}


def test_progress_is_reported_about_every_tenth(dataset):
    _, _, messages = dataset
    assert "rendering" in messages[0]
    assert 8 <= len(messages) <= 12 and messages[-1].endswith("(100%)")


# ---- determinism -----------------------------------------------------------------------------
def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_same_config_gives_byte_identical_files_whatever_the_workers(dataset, tmp_path):
    out, _, _ = dataset
    again = tmp_path / "again"
    (again / "images").mkdir(parents=True)  # an older, larger run with the flat layout
    (again / "images" / "99999999_000.png").write_bytes(b"stale")
    (again / "images" / "00000001_000.png").write_bytes(b"stale")
    generate_phantoms(again, dataclasses.replace(SMALL, processes=2), progress=None)
    assert _snapshot(again) == _snapshot(out)


def test_another_seed_gives_another_dataset(dataset, tmp_path):
    out, _, _ = dataset
    other = tmp_path / "other"
    generate_phantoms(other, dataclasses.replace(SMALL, seed=4), progress=None)
    assert (other / "Data_Entry_2017.csv").read_bytes() != \
        (out / "Data_Entry_2017.csv").read_bytes()
    first = (out / "images_001/images/00000001_000.png").read_bytes()
    assert (other / "images_001/images/00000001_000.png").read_bytes() != first


# ---- label statistics (planning only: no pixels, so large configs stay fast) -------------------
@pytest.fixture(scope="module")
def large_plan():
    return plan_dataset(PhantomConfig(n_patients=4000, seed=1))


def _matrix(plan, attribute: str = "truth") -> np.ndarray:
    matrix = np.zeros((len(plan), len(LABELS)), dtype=bool)
    for row, planned in enumerate(plan):
        for name in getattr(planned, attribute):
            matrix[row, INDEX[name]] = True
    return matrix


def test_prevalence_is_ordered_like_nih_with_a_floor_for_rare_classes(large_plan):
    truth = _matrix(large_plan)
    counts = truth.sum(axis=0)
    assert LABELS[int(np.argmax(counts))] == "Infiltration"
    assert counts[INDEX["Hernia"]] >= 30
    assert INDEX["Hernia"] in np.argsort(counts)[:3]
    assert 0.45 <= (~truth.any(axis=1)).mean() <= 0.62  # NIH: 0.54 No Finding
    per_patient = np.bincount([p.patient_id for p in large_plan])[1:]
    assert np.median(per_patient) == 1 and 2.3 <= per_patient.mean() <= 3.5
    assert per_patient.max() <= 12


def test_the_floor_holds_in_small_datasets():
    plan = plan_dataset(dataclasses.replace(SMALL, label_noise=0.1))
    assert (_matrix(plan, "truth").sum(axis=0) >= SMALL.min_positives).all()
    assert (_matrix(plan, "labels").sum(axis=0) >= SMALL.min_positives).all()


def test_the_default_floor_shrinks_with_the_dataset():
    assert PhantomConfig().floor == 30
    small = PhantomConfig(n_patients=100)  # a default floor of 30 would be 11% of the images
    assert 0 < small.floor < 10
    assert (_matrix(plan_dataset(small)).sum(axis=0) >= small.floor).all()


def test_label_noise_flips_labels_but_keeps_class_counts():
    plan = plan_dataset(PhantomConfig(n_patients=600, label_noise=0.2, seed=2))
    truth, labels = _matrix(plan, "truth"), _matrix(plan, "labels")
    assert (truth != labels).any(axis=1).mean() > 0.05
    assert (truth.sum(axis=0) == labels.sum(axis=0)).all()


def test_follow_ups_share_findings_more_often_than_random_pairs(large_plan):
    truth = _matrix(large_plan)
    follow = np.array([i for i, p in enumerate(large_plan) if p.follow_up > 0])
    before, after = truth[follow - 1], truth[follow]
    persistence = (before & after).sum() / before.sum()
    assert persistence > 2 * truth.mean(axis=0).max()
    rng = np.random.default_rng(0)
    shuffled = truth[rng.permutation(len(truth))[: len(follow)]]
    assert (before & after).sum() > 2 * (before & shuffled).sum()


def test_plan_matches_the_nih_reference_statistics(large_plan):
    reference = json.loads(REFERENCE.read_text())
    truth = _matrix(large_plan)
    nih = np.array([reference["positives"][name] for name in LABELS]) / reference["images"]
    ranks = [np.argsort(np.argsort(v)) for v in (truth.mean(axis=0), nih)]
    assert np.corrcoef(*ranks)[0, 1] > 0.9  # Spearman rank correlation
    nih_no_finding = reference["no_finding"] / reference["images"]
    assert abs((~truth.any(axis=1)).mean() - nih_no_finding) < 0.06
    follow = np.array([i for i, p in enumerate(large_plan) if p.follow_up > 0])
    before, after = truth[follow - 1], truth[follow]
    persistence = (before & after).sum(axis=0) / np.maximum(before.sum(axis=0), 1)
    nih_persistence = np.array([reference["label_persistence_next_followup"][n] for n in LABELS])
    common = before.sum(axis=0) >= 100  # rare classes' persistence is too noisy to compare
    assert np.abs(persistence - nih_persistence)[common].max() < 0.1


# ---- the signs ------------------------------------------------------------------------------
def _render(finding: str | None, index: int, size: int = 64) -> tuple[np.ndarray, dict]:
    anatomy = sample_anatomy(np.random.default_rng([7, index]))
    findings = [] if finding is None else [finding]
    return render_image(np.random.default_rng([8, index]), findings, anatomy, size)


@pytest.mark.parametrize("finding", LABELS)
def test_each_box_frames_its_sign(finding):
    """Counterfactual pairs (same patient and noise, with and without the finding) differ
    mostly inside the finding's box."""
    for index in range(4):
        with_sign, boxes = _render(finding, index)
        without, _ = _render(None, index)
        change = np.abs(with_sign.astype(float) - without)
        x, y, w, h = map(int, boxes[finding])
        inside = np.zeros(change.shape, dtype=bool)
        inside[y:y + h, x:x + w] = True
        assert change[inside].mean() > 2 * change.max() / 255  # the sign shows
        # Hyperinflation and volume loss move anatomy outside the lesion's own box.
        factor = 1.5 if finding in {"Emphysema", "Atelectasis"} else 5
        assert change[inside].mean() > factor * change[~inside].mean()


@pytest.mark.parametrize("finding", ["Cardiomegaly", "Effusion", "Emphysema", "Edema"])
def test_strong_signs_are_learnable_from_16px_thumbnails(finding):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import cross_val_predict

    features, labels = [], []
    for index in range(200):  # every other patient has the finding
        label = index % 2
        image, _ = _render(finding if label else None, 1000 + index)
        small = Image.fromarray(image).resize((16, 16), Image.Resampling.BOX)
        features.append(np.asarray(small, dtype=float).ravel() / 255)
        labels.append(label)
    features = np.array(features)
    features = (features - features.mean(axis=0)) / (features.std(axis=0) + 1e-6)
    scores = cross_val_predict(LogisticRegression(C=0.1, max_iter=1000), features,
                               np.array(labels), cv=4, method="decision_function")
    assert roc_auc_score(labels, scores) > 0.75


def test_ap_films_magnify_the_heart():
    anatomy = sample_anatomy(np.random.default_rng(5))
    widths = {}
    for view in ("PA", "AP"):
        _, boxes = render_image(np.random.default_rng(6), ["Cardiomegaly"], anatomy, 128,
                                view=view)
        widths[view] = boxes["Cardiomegaly"][2]
    assert widths["AP"] > widths["PA"]


def test_a_patients_lesion_stays_put_across_follow_ups():
    anatomy = sample_anatomy(np.random.default_rng(9))
    centres = []
    for follow_up in range(3):
        _, boxes = render_image(np.random.default_rng(follow_up), ["Mass"], anatomy, 128)
        x, y, w, h = boxes["Mass"]
        centres.append((x + w / 2, y + h / 2))
    assert np.ptp(np.array(centres), axis=0).max() < 12  # pose jitter only


# ---- errors ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("field", "value"), [
    ("n_patients", 0),
    ("image_size", -64),
    ("image_size", 16),
    ("seed", -1),
    ("label_noise", 0.5),
    ("label_noise", -0.01),
    ("min_positives", 1000),
    ("max_images_per_patient", 0),
    ("strength_range", (0.0, 1.0)),
    ("ap_fraction", 1.5),
    ("processes", 0),
])
def test_bad_config_names_the_field_and_value(field, value):
    with pytest.raises(ValueError, match=rf"PhantomConfig\.{field} must be .*; got {re.escape(repr(value))}"):
        PhantomConfig(**{field: value})


def test_render_rejects_unknown_findings_and_views():
    anatomy = sample_anatomy(np.random.default_rng(0))
    with pytest.raises(ValueError, match="Infiltrate"):
        render_image(np.random.default_rng(0), ["Infiltrate"], anatomy, 64)
    with pytest.raises(ValueError, match="LL"):
        render_image(np.random.default_rng(0), [], anatomy, 64, view="LL")


def test_images_are_nested_like_the_download_and_ingest_finds_them(tmp_path):
    from cxr.data.nih import build_label_table

    config = dataclasses.replace(SMALL, n_patients=12, images_per_folder=10)
    summary = generate_phantoms(tmp_path, config, progress=None)
    pngs = sorted(tmp_path.rglob("*.png"))
    folders = sorted({p.parent.relative_to(tmp_path).as_posix() for p in pngs})
    n_folders = -(-summary["images"] // 10)
    assert folders == [f"images_{i:03d}/images" for i in range(1, n_folders + 1)]
    assert n_folders >= 2
    # Name order across folders: the first 10 names in images_001, and so on.
    assert [p.name for p in pngs] == sorted(p.name for p in pngs)
    assert len(list((tmp_path / "images_001" / "images").iterdir())) == 10
    table = build_label_table(tmp_path / "Data_Entry_2017.csv", tmp_path)
    assert len(table) == summary["images"]
    assert table["path"].str.contains("/images_00[0-9]/images/").all()


def test_film_sizes_follow_nih_and_leave_the_images_alone():
    from cxr.data.phantoms.film import NIH_FILM_SIZES, draw_films

    sizes, spacing = draw_films(0, 20_000)
    common = {tuple(s) for s in NIH_FILM_SIZES}
    share = np.mean([tuple(s) in common for s in sizes.tolist()])
    assert share == pytest.approx(1 - 22_154 / 112_120, abs=0.02)
    assert np.mean([tuple(s) == (2500, 2048) for s in sizes.tolist()]) == \
        pytest.approx(37_153 / 112_120, abs=0.02)
    assert np.median(spacing) == pytest.approx(0.143, abs=0.001)
    assert np.quantile(spacing, 0.05) == pytest.approx(0.139, abs=0.002)
    assert np.quantile(spacing, 0.95) == pytest.approx(0.194, abs=0.003)
    assert (sizes > 1024).all()
    again = draw_films(0, 20_000)
    assert (again[0] == sizes).all() and (again[1] == spacing).all()
