"""DVC stage `baseline`: a logistic regression per finding on thumbnails of the training split,
scored on the test split (macro AUC with a patient-bootstrap CI) -> the baseline metrics JSON.

Usage: python stages/baseline.py --split SPLIT_CSV --store STORE_DIR --metrics JSON
"""

import time

import _common

from cxr.data.prepare import open_store
from cxr.evaluation import bootstrap_auc
from cxr.evaluation.baseline import baseline_summary, fit_and_score
from cxr.io import read_table, write_json
from cxr.labels import LABELS


def main() -> None:
    parser = _common.paths(_common.parser(__doc__), split="the split table",
                           store="the prepared image store", metrics="the baseline metrics (JSON)")
    args, params = _common.start(parser)
    settings = params.baseline
    table = read_table(args.split)
    store = open_store(args.store, image_size=params.pipeline.image_size)
    train, test = table[table["split"] == "train"], table[table["split"] == "test"]
    started = time.perf_counter()
    # Thumbnails are taken from the memory-mapped store in chunks: the stage's memory is bounded
    # by cxr.evaluation.baseline.THUMBNAIL_CHUNK images, not by the size of the splits.
    scores = fit_and_score(store.images, train[list(LABELS)].to_numpy(), store.images,
                           size=settings.thumbnail, regularization=settings.regularization,
                           train_rows=store.rows_for(train["Image Index"]),
                           test_rows=store.rows_for(test["Image Index"]))
    result = bootstrap_auc(test[list(LABELS)].to_numpy(), scores, test["Patient ID"].to_numpy(),
                           LABELS, n_boot=params.evaluate.n_boot, seed=params.seed,
                           ci=params.evaluate.ci)
    summary = baseline_summary(result, LABELS, {
        "thumbnail": settings.thumbnail, "regularization": settings.regularization,
        "train_images": int(len(train)), "test_images": int(len(test)),
        "seconds": round(time.perf_counter() - started, 1)})
    write_json(summary, args.metrics)
    print(f"baseline: logistic regression on {settings.thumbnail}x{settings.thumbnail} "
          f"thumbnails, test macro AUC {summary['macro_auc']:.3f} "
          f"({summary['macro_auc_ci_low']:.3f}-{summary['macro_auc_ci_high']:.3f})")


if __name__ == "__main__":
    main()
