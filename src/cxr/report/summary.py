"""The report stage's numbers: paired model comparisons and ``metrics/summary.json`` (numpy only)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from cxr.evaluation import paired_bootstrap_macro_auc
from cxr.progress import Progress


def compare_models(scores: Mapping[str, np.ndarray], y_true: np.ndarray, patients: np.ndarray,
                   labels: Sequence[str], *, n_boot: int, seed: int, ci: float,
                   progress: Callable[[str], None] | None = None) -> list[dict]:
    """Paired patient-bootstrap macro-AUC difference for every pair of models, in order.
    ``progress`` (a line sink such as ``print``) hears how many pairs are done."""
    comparisons = []
    pairs = list(itertools.combinations(list(scores), 2))
    done = Progress(f"report: paired bootstrap ({n_boot} resamples)", len(pairs),
                    unit="model pairs", sink=progress)
    for a, b in pairs:
        paired = paired_bootstrap_macro_auc(y_true, scores[a], scores[b], patients, labels,
                                            n_boot=n_boot, seed=seed, ci=ci)
        comparisons.append({"a": a, "b": b, **paired})
        done.advance()
    return comparisons


def summary_metrics(models: Mapping[str, Mapping], comparisons: Sequence[Mapping],
                    baseline: Mapping | None = None) -> dict:
    """``metrics/summary.json``: the best model, each model's headline numbers, the pairs, and
    the linear baseline (macro AUC with its CI and per-finding AUC) when given."""
    best = max(models, key=lambda n: models[n]["eval"]["macro_auc"] or -1.0)
    extra = {} if baseline is None else {"baseline": {
        key: baseline[key] for key in ("macro_auc", "macro_auc_ci_low", "macro_auc_ci_high", "auc")}}
    return {
        "best_model": best,
        "models": {n: {"macro_auc": m["eval"]["macro_auc"],
                       "macro_auc_ci_low": m["eval"]["macro_auc_ci_low"],
                       "macro_auc_ci_high": m["eval"]["macro_auc_ci_high"],
                       "ece": m["eval"]["calibration"]["ece"],
                       "referral_gain_at_20": m["eval"]["referral"]["gain_at_20"],
                       "pointing_game": (m["localize"] or {}).get("overall", {}).get("pointing"),
                       "pointing_chance": (m["localize"] or {}).get("overall", {}).get("chance"),
                       "flat_heatmaps": _share(m["localize"], "flat"),
                       "localization_iou": (m["localize"] or {}).get("overall", {})
                       .get("iou_mean"),
                       "auc": m["eval"]["auc"],
                       **({"referral_controls": m["referral_controls"]}
                          if m.get("referral_controls") else {})}
                   for n, m in models.items()},
        "comparisons": {f"{c['a']}_vs_{c['b']}": {k: c[k] for k in
                                                  ("difference", "ci_low", "ci_high", "p_value")}
                        for c in comparisons},
        **extra,
    }


def _share(localize: Mapping | None, key: str) -> float | None:
    """overall[key] / overall["n"] of a localize result (None without one)."""
    overall = (localize or {}).get("overall", {})
    return overall[key] / overall["n"] if overall.get("n") else None


HEADLINE_KEYS = ("macro_auc", "macro_auc_ci_low", "macro_auc_ci_high", "ece",
                 "referral_gain_at_20", "pointing_game", "flat_heatmaps")


def headline_metrics(summary: Mapping) -> dict:
    """``metrics/headline.json``: the few numbers per model (and the baseline's macro AUC) that
    ``dvc exp show`` and ``dvc metrics diff`` show by default; the rest stays in the detailed
    files (summary, eval, train, localize, baseline)."""
    headline = {name: {key: model.get(key) for key in HEADLINE_KEYS}
                for name, model in summary["models"].items()}
    if "baseline" in summary:
        headline["baseline"] = {key: summary["baseline"][key]
                                for key in ("macro_auc", "macro_auc_ci_low", "macro_auc_ci_high")}
    return headline
