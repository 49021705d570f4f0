"""How hard are the phantoms? A weak baseline must beat chance but stay far from perfect.

Generates the default phantom dataset (or reads one with --data), shrinks every image to
16x16 pixels and fits one logistic regression per finding on a patient-disjoint split. The
macro ROC-AUC should be clearly above 0.5 (the signs are learnable) and clearly below ~0.9
(a CNN on full-size images has room to do better). For comparison it also prints the same
baseline on a leaky image-level split, and the time the default generation took.

    PYTHONPATH=src python benchmarks/phantom_difficulty.py [--data DIR] [--processes 2]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.preprocessing import StandardScaler

from cxr.data.nih import find_images
from cxr.data.phantoms import PhantomConfig, generate_phantoms
from cxr.labels import LABELS, encode

THUMBNAIL = 16


def read_dataset(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(16x16 thumbnails flattened, published multi-hot labels, patient ids)."""
    with open(data_dir / "Data_Entry_2017.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))[1:]  # 9 header names, 11 fields a row: go by position
    paths = find_images(data_dir)  # nested like the download: images_001/images/...
    thumbnails, labels, patients = [], [], []
    for row in rows:
        with Image.open(paths[row[0]]) as image:
            small = image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX)
        thumbnails.append(np.asarray(small, dtype=np.float32).ravel() / 255)
        labels.append(encode(row[1]))
        patients.append(int(row[3]))
    return np.stack(thumbnails), np.stack(labels), np.array(patients)


def per_class_auc(features: np.ndarray, labels: np.ndarray, train: np.ndarray,
                  test: np.ndarray) -> dict[str, float]:
    scaler = StandardScaler().fit(features[train])
    x_train, x_test = scaler.transform(features[train]), scaler.transform(features[test])
    aucs = {}
    for k, name in enumerate(LABELS):
        y_train, y_test = labels[train, k], labels[test, k]
        if y_train.min() == y_train.max() or y_test.min() == y_test.max():
            continue  # a class missing from one side has no AUC
        model = LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced")
        model.fit(x_train, y_train)
        aucs[name] = float(roc_auc_score(y_test, model.decision_function(x_test)))
    return aucs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="an existing phantom dataset to read")
    parser.add_argument("--processes", type=int, default=2, help="generation workers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        data_dir = args.data
        if data_dir is None:
            data_dir = Path(scratch) / "phantoms"
            config = PhantomConfig(seed=args.seed, processes=args.processes)
            summary = generate_phantoms(data_dir, config, progress=None)
            print(f"generation: {summary['images']} images of {summary['patients']} patients, "
                  f"{config.image_size} px, {config.processes} worker(s): "
                  f"{summary['seconds']:.1f} s")
        started = time.perf_counter()
        features, labels, patients = read_dataset(data_dir)
        print(f"read + {THUMBNAIL}x{THUMBNAIL} thumbnails: {time.perf_counter() - started:.1f} s")

    splits = {
        "patient-disjoint": GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
        .split(features, groups=patients),
        "image-level (leaky)": ShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
        .split(features),
    }
    results = {}
    for split_name, split in splits.items():
        train, test = next(split)
        results[split_name] = per_class_auc(features, labels, train, test)

    print(f"\nlogistic regression on {THUMBNAIL}x{THUMBNAIL} pixels, ROC-AUC on published labels")
    print(f"{'finding':20s} {'positives':>9s} " + " ".join(f"{n:>20s}" for n in results))
    for k, name in enumerate(LABELS):
        cells = " ".join(f"{r.get(name, float('nan')):20.3f}" for r in results.values())
        print(f"{name:20s} {int(labels[:, k].sum()):9d} {cells}")
    macro = {n: float(np.mean(list(r.values()))) for n, r in results.items()}
    print(f"{'macro':20s} {'':9s} " + " ".join(f"{m:20.3f}" for m in macro.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
