import numpy as np
import pytest

from cxr.evaluation.baseline import LinearBaseline, fit_and_score, thumbnails


def test_thumbnails_average_blocks_and_channels():
    images = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    images[0, :2, :2] = 255  # one full 2x2 block in the top-left corner of the first image
    images[1, :, :, 0] = 255  # one channel of three
    thumbs = thumbnails(images, size=16)
    assert thumbs.shape == (2, 256)
    assert thumbs[0, 0] == pytest.approx(1.0) and thumbs[0, 1:].max() == 0.0
    assert np.allclose(thumbs[1], 1 / 3)


def test_thumbnails_reject_sizes_that_do_not_divide():
    with pytest.raises(ValueError, match="multiple of 16"):
        thumbnails(np.zeros((1, 40, 40), dtype=np.uint8), size=16)


def test_baseline_learns_a_coarse_sign_and_not_a_fine_one():
    """A bright quadrant survives 16x16 averaging; a one-pixel dot does not (much)."""
    rng = np.random.default_rng(0)
    n = 600
    labels = rng.random((n, 2)) < 0.3
    images = rng.normal(100, 20, (n, 64, 64)).clip(0, 255)
    images[labels[:, 0], :32, :32] += 25          # coarse: a brighter quadrant
    images[labels[:, 1], 40, 40] += 60            # fine: one pixel at one place
    train, test = slice(0, 400), slice(400, None)
    scores = fit_and_score(images[train].astype(np.uint8), labels[train],
                           images[test].astype(np.uint8), size=16)
    from sklearn.metrics import roc_auc_score

    coarse = roc_auc_score(labels[test, 0], scores[:, 0])
    fine = roc_auc_score(labels[test, 1], scores[:, 1])
    assert coarse > 0.95
    assert fine < 0.75


def test_single_class_finding_scores_zero():
    features = np.random.default_rng(1).random((20, 4))
    labels = np.zeros((20, 2))
    labels[:10, 0] = 1
    model = LinearBaseline().fit(features, labels)
    scores = model.decision_function(features)
    assert np.all(scores[:, 1] == 0.0) and scores[:, 0].std() > 0


def test_store_thumbnails_in_chunks_equal_one_pass():
    from cxr.evaluation.baseline import store_thumbnails

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (50, 32, 32), dtype=np.uint8)
    rows = rng.permutation(50)[:37]
    whole = thumbnails(images[rows], size=8)
    for chunk in (1, 5, 37, 100):
        assert np.array_equal(store_thumbnails(images, rows, size=8, chunk=chunk), whole)
    assert store_thumbnails(images, rows[:0], size=8).shape == (0, 64)
