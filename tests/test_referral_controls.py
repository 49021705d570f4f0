"""The report's referral controls (cxr.report.uncertainty) and their section."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from cxr.evaluation.referral import decision_flip_uncertainty
from cxr.report import build
from cxr.report.uncertainty import referral_controls, spearman

LABELS3 = ["a", "b", "c"]


def _data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 3)) < 0.3).astype(int)
    noise = rng.normal(0, 1, (n, 3))
    score = 1 / (1 + np.exp(-(2.0 * y - 1 + noise)))
    return y, score, noise


def test_spearman_matches_scipy_with_ties_and_is_none_for_a_constant():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 5, 60).astype(float)  # many ties
    b = a + rng.normal(0, 2, 60)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert spearman(np.ones(5), np.arange(5)) is None


HALF = np.full(3, 0.5)  # operating thresholds


def test_a_spread_that_reaches_the_threshold_on_the_mistakes_helps_beyond_the_margin():
    y, score, _ = _data()
    wrong = (score >= 0.5) != (y == 1)
    std = np.where(wrong, 0.3, 0.02)  # wide exactly where the call is wrong
    c = referral_controls(y, score, std, HALF, LABELS3, seed=1, n_random=50)
    assert c["referred_images"] == 80
    assert c["gain_flip"] > 0.03
    assert c["gain_flip"] > c["gain_flip_mean_spread"] + 0.01  # the per-image spread adds
    assert c["auc_referred"] < c["auc_kept"]
    assert abs(c["gain_random"]) < 0.01


def test_a_spread_with_no_per_image_information_gains_what_the_margin_alone_gains():
    y, score, _ = _data(seed=5)
    std = np.broadcast_to([0.05, 0.1, 0.2], score.shape)  # the same for every image
    c = referral_controls(y, score, std, HALF, LABELS3, seed=1, n_random=5)
    assert c["gain_flip"] == c["gain_flip_mean_spread"]
    assert c["gain_flip"] > 0  # near the threshold is where these scores mix the classes


def test_an_std_that_restates_the_probability_gains_what_referring_the_most_probable_does():
    y, score, _ = _data(seed=2)
    std = score * 0.05  # monotone in the probability
    c = referral_controls(y, score, std, HALF, LABELS3, seed=1, n_random=5)
    assert c["std_probability_spearman"] == pytest.approx(1.0)
    assert c["gain_std"] == pytest.approx(c["gain_top_probability"])
    referred = np.argsort(-decision_flip_uncertainty(score, std, HALF), kind="stable")[:80]
    assert c["positives_referred_share"] == pytest.approx(y[referred].sum() / y.sum())
    assert c["abnormal_share_referred"] == pytest.approx((y[referred].sum(1) > 0).mean())


def test_controls_are_reproducible_for_a_seed_and_check_their_input():
    y, score, noise = _data(seed=4)
    std = np.abs(noise) * 0.05
    first = referral_controls(y, score, std, HALF, LABELS3, seed=7, n_random=20)
    assert referral_controls(y, score, std, HALF, LABELS3, seed=7, n_random=20) == first
    with pytest.raises(ValueError, match=r"must all be \(images, 3\)"):
        referral_controls(y, score[:, :2], std, HALF, LABELS3)
    with pytest.raises(ValueError, match="at must be a fraction"):
        referral_controls(y, score, std, HALF, LABELS3, at=1.0)
    with pytest.raises(ValueError, match=r"thresholds has shape \(2,\); expected \(3,\)"):
        referral_controls(y, score, std, HALF[:2], LABELS3)


def _controls(gain, referred, kept, margin=None, std_gain=None, random=0.0):
    return {"referred_fraction": 0.2, "referred_images": 20, "gain_flip": gain,
            "gain_flip_mean_spread": gain if margin is None else margin,
            "gain_std": gain if std_gain is None else std_gain,
            "gain_top_probability": gain, "gain_random": random, "auc_referred": referred,
            "auc_kept": kept, "std_probability_spearman": 0.85,
            "abnormal_share_referred": 0.95, "abnormal_share_all": 0.5,
            "positives_referred_share": 0.46}


def test_the_uncertainty_section_shows_the_controls_and_says_why_a_gain_is_negative():
    context = {"models": {
        "simple_cnn": {"eval": {"macro_auc": 0.9},
                       "referral_controls": _controls(0.008, 0.86, 0.91, margin=0.005,
                                                      std_gain=0.003)},
        "fusion": {"eval": {"macro_auc": 0.86},
                   "referral_controls": _controls(-0.013, 0.864, 0.848)}}}
    markdown, _ = build.build_report(context)
    section = markdown.split('<a id="uncertainty"></a>')[1].split('<a id="localization">')[0]
    assert "### Why referral helps or not" in section
    assert ("| Fusion | -0.013 | -0.013 | -0.013 | -0.013 | +0.000 | 0.864 / 0.848 | 0.85 "
            "| 95.0% (50.0%) | 46% |") in section
    assert "(Spearman 0.85): dropout at the head" in section
    assert "(gains Simple CNN +0.003 and Fusion -0.013)" in section
    assert "It lowers it for Fusion (-0.013)" in section
    assert "Fusion (0.864 among the referred against 0.848 among the kept) ranks the images " \
        "referred no worse than those kept: the spread does not single out" in section
    assert "Simple CNN (+0.008; AUC 0.860 among the referred against 0.910 among the kept)" \
        in section
    assert ("the gains are Simple CNN +0.005 and Fusion -0.013: the per-image spread adds to "
            "the distance from the threshold for Simple CNN (+0.003) (at 20% referred") in section


def test_the_reading_says_where_the_per_image_spread_takes_from_the_margin_and_tiny_gains():
    context = {"models": {
        "efficientnetb0": {"eval": {"macro_auc": 0.84},
                           "referral_controls": _controls(0.0003, 0.80, 0.84, margin=0.016,
                                                          random=-0.00011)},
        "densenet121": {"eval": {"macro_auc": 0.85},
                        "referral_controls": _controls(0.010, 0.78, 0.86, margin=0.012)}}}
    markdown, _ = build.build_report(context)
    assert "EfficientNetB0 (+0.0003; AUC 0.800 among the referred" in markdown
    assert "| EfficientNetB0 | +0.0003 | +0.016 |" in markdown  # the controls table's first gain
    assert "| +0.0003 | -0.0001 | 0.800 / 0.840 |" in markdown  # the random control too
    assert "(gains DenseNet121 +0.010 and EfficientNetB0 +0.0003)" in markdown  # max std's too
    assert ("the per-image spread takes from it for DenseNet121 (-0.002) and EfficientNetB0 "
            "(-0.016)") in markdown


def test_the_uncertainty_section_has_no_controls_without_them():
    markdown, _ = build.build_report({"models": {"simple_cnn": {"eval": {"macro_auc": 0.9}}}})
    assert "Why referral helps or not" not in markdown
