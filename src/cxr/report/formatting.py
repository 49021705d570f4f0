"""Reading the report context and formatting its numbers (shared by the section builders)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from cxr.report.document import MISSING, PUBLISHED_STUDY, Figure, Note, display_name


def _get(mapping, *keys):
    """Nested lookup that answers None for anything missing or not a dict on the way."""
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _models(context) -> list[str]:
    """Model names: the study's order first, then any others as given."""
    models = context.get("models")
    if not isinstance(models, Mapping):
        return []
    known = [name for name in PUBLISHED_STUDY["models"] if name in models]
    return known + [str(name) for name in models if name not in known]


def _absent_notes(models, results: Mapping, what: str, where: str) -> list:
    """The note a section shows when no model, or only some, have ``what`` (from ``where``):
    empty when every model has it."""
    if not results:
        return [Note([f"No {what} ({where}) in the report context."])]
    missing = [name for name in models if name not in results]
    if missing:
        return [Note([f"No {what} for {', '.join(display_name(m) for m in missing)}."])]
    return []


def _evaluated(context) -> dict[str, Mapping]:
    """{model: eval dict} for the models whose evaluation has a macro AUC."""
    result = {}
    for name in _models(context):
        evaluation = _get(context, "models", name, "eval")
        if isinstance(evaluation, Mapping) and _num(evaluation.get("macro_auc")) is not None:
            result[name] = {**evaluation, "macro_auc": _num(evaluation["macro_auc"])}
    return result


def _comparison(comparisons, first: str, second: str):
    """(difference, low, high) of ``first`` - ``second``, whichever order it was stored in."""
    for entry in comparisons or []:
        a, b = _get(entry, "a"), _get(entry, "b")
        values = [_num(_get(entry, key)) for key in ("difference", "ci_low", "ci_high")]
        if (a, b) == (first, second):
            return tuple(values)
        if (a, b) == (second, first):
            difference, low, high = values
            return (_negate(difference), _negate(high), _negate(low))
    return None


def _comparison_p(comparisons, first: str, second: str):
    for entry in comparisons or []:
        if {_get(entry, "a"), _get(entry, "b")} == {first, second}:
            return _num(_get(entry, "p_value"))
    return None


def _curve_auc(curve, fraction: float) -> float | None:
    """Macro AUC of the referral-curve point nearest ``fraction`` referred."""
    points = [(abs(_num(_get(p, "referred_fraction")) - fraction), _num(_get(p, "macro_auc")))
              for p in curve if _num(_get(p, "referred_fraction")) is not None]
    points = [point for point in points if point[1] is not None and point[0] <= 0.05]
    return min(points)[1] if points else None


def _sample_size(evaluation) -> str:
    images, patients = evaluation.get("n_images"), evaluation.get("n_patients")
    if images is None:
        return ""
    text = f"{_int(images)} test images"
    return text + (f" from {_int(patients)} patients" if patients is not None else "")


# ---------------------------------------------------------------------------------------------
# Formatting numbers


def _num(value) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _negate(value):
    return None if value is None else -value


def _auc(value, digits: int = 3) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value:.{digits}f}"


def _fixed(value, digits: int = 3) -> str:
    return _auc(value, digits)


def _signed(value, digits: int = 3) -> str:
    """`value` with its sign; one that rounds to zero prints as +0.000, never -0.000."""
    value = _num(value)
    if value is None:
        return MISSING
    return f"{round(value, digits) + 0.0:+.{digits}f}"  # + 0.0 turns -0.0 into 0.0


def _signed_gain(value) -> str:
    """:func:`_signed` to three decimals, or four where three would print a nonzero gain as
    +0.000 (an AUC gain of 0.0003 is still a gain, and its sign is the point)."""
    value = _num(value)
    if value is not None and 0 < abs(value) < 0.0005:
        return _signed(value, 4)
    return _signed(value)


def _ci_text(evaluation) -> str:
    low, high = _num(evaluation.get("macro_auc_ci_low")), _num(evaluation.get("macro_auc_ci_high"))
    return "" if low is None or high is None else f" (95% CI {low:.3f}–{high:.3f})"


def _auc_with_ci(evaluation) -> str:
    if evaluation is None:
        return MISSING
    low, high = _num(evaluation.get("macro_auc_ci_low")), _num(evaluation.get("macro_auc_ci_high"))
    # on its own line in HTML, so the table stays narrow enough for the page
    ci = "" if low is None or high is None else f"\n({low:.3f}–{high:.3f})"
    return _auc(evaluation.get("macro_auc")) + ci


def _percent(value, digits: int = 1) -> str:
    value = _num(value)
    return MISSING if value is None else f"{value * 100:.{digits}f}%"


def _int(value) -> str:
    value = _num(value)
    return MISSING if value is None else f"{int(round(value)):,}"


def _p_text(value) -> str:
    value = _num(value)
    if value is None:
        return MISSING
    return "< 0.001" if value < 0.001 else f"{value:.3f}"


def _p_value_phrase(value) -> str:
    """"= 0.012" or "< 0.001", to follow a "p"."""
    text = _p_text(value)
    return text if text.startswith("<") else f"= {text}"


def _duration(seconds) -> str:
    seconds = _num(seconds)
    if seconds is None:
        return MISSING
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _param_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


# ---------------------------------------------------------------------------------------------
# Figures on disk


def _figure_file(path) -> Path | None:
    if path is None:
        return None
    candidate = Path(path)
    return candidate if candidate.is_file() and candidate.stat().st_size > 0 else None


def _figure_problem(figure: Figure) -> str:
    if figure.path is None:
        return f"Figure not available: {figure.caption} (no path in the report context)."
    return f"Figure not available: {figure.caption} ({figure.path} does not exist or is empty)."
