"""The one set of scalar argument checks, in the spirit of scikit-learn's ``check_scalar``.

Every check names the argument, shows what was given and says what is allowed, e.g.
``seed must be an int >= 0; got -1.``. Booleans are never accepted as numbers (``True`` is an
``int`` to Python, never to a caller), NaN never passes a numeric check. Each check returns the
value converted to the plain Python type, so callers can store it directly.

The error type is ``TypeError`` for a value of the wrong type and ``ValueError`` for one out of
bounds, as in scikit-learn; ``type_error=ValueError`` keeps the modules whose contract always
raised ``ValueError`` (params, splitting, sampling, phantoms) unchanged for their callers.
"""

from __future__ import annotations

import math
import numbers

_INCLUDE = ("both", "left", "right", "neither")


def _bounds_text(min_val, max_val, include_boundaries: str) -> str:
    left = include_boundaries in ("both", "left")
    right = include_boundaries in ("both", "right")
    if min_val is not None and max_val is not None:
        return f"in {'[' if left else '('}{min_val}, {max_val}{']' if right else ')'}"
    if min_val is not None:
        return f"{'>=' if left else '>'} {min_val}"
    if max_val is not None:
        return f"{'<=' if right else '<'} {max_val}"
    return ""


def _in_bounds(value, min_val, max_val, include_boundaries: str) -> bool:
    left = include_boundaries in ("both", "left")
    right = include_boundaries in ("both", "right")
    if min_val is not None and (value < min_val if left else value <= min_val):
        return False
    return not (max_val is not None and (value > max_val if right else value >= max_val))


def check_scalar(x, name: str, target_type, *, min_val=None, max_val=None,
                 include_boundaries: str = "both", type_error: type[Exception] = TypeError):
    """``x`` if it is a ``target_type`` ("int", "number" or "bool") within the bounds; else raise.

    ``include_boundaries`` is one of "both", "left", "right", "neither" (which of ``min_val``
    and ``max_val`` are allowed values). Returns ``int(x)``, ``float(x)`` or ``bool(x)``.
    Raises ``type_error`` (default TypeError) for a wrong type, ValueError for a value outside
    the bounds; both messages read "NAME must be ALLOWED; got VALUE.".
    """
    if include_boundaries not in _INCLUDE:
        raise ValueError(f"include_boundaries must be one of {list(_INCLUDE)}; "
                         f"got {include_boundaries!r}.")
    kinds = {"int": ("an int", numbers.Integral, int), "number": ("a number", numbers.Real, float),
             "bool": ("a bool", bool, bool)}
    if target_type not in kinds:
        raise ValueError(f"target_type must be one of {list(kinds)}; got {target_type!r}.")
    noun, abstract, convert = kinds[target_type]
    bounds = _bounds_text(min_val, max_val, include_boundaries)
    allowed = f"{noun} {bounds}".strip()
    if target_type == "bool":
        import numpy as np  # numpy's bool_ is not a subclass of bool

        if not isinstance(x, bool | np.bool_):
            raise type_error(f"{name} must be {allowed}; got {x!r}.")
        return bool(x)
    if isinstance(x, bool) or not isinstance(x, abstract):
        raise type_error(f"{name} must be {allowed}; got {x!r}.")
    if (target_type == "number" and math.isnan(float(x))) or \
            not _in_bounds(x, min_val, max_val, include_boundaries):
        raise ValueError(f"{name} must be {allowed}; got {x!r}.")
    return convert(x)


def check_int(x, name: str, *, min_val=None, max_val=None, include_boundaries: str = "both",
              type_error: type[Exception] = TypeError) -> int:
    """``int(x)`` for an integer (not a bool) within the bounds."""
    return check_scalar(x, name, "int", min_val=min_val, max_val=max_val,
                        include_boundaries=include_boundaries, type_error=type_error)


def check_number(x, name: str, *, min_val=None, max_val=None, include_boundaries: str = "both",
                 type_error: type[Exception] = TypeError) -> float:
    """``float(x)`` for a real number (not a bool, not NaN) within the bounds."""
    return check_scalar(x, name, "number", min_val=min_val, max_val=max_val,
                        include_boundaries=include_boundaries, type_error=type_error)


def check_fraction(x, name: str, *, include_boundaries: str = "both",
                   type_error: type[Exception] = TypeError) -> float:
    """``float(x)`` for a number in [0, 1] (ends as ``include_boundaries`` says)."""
    return check_number(x, name, min_val=0, max_val=1, include_boundaries=include_boundaries,
                        type_error=type_error)


def check_bool(x, name: str, *, type_error: type[Exception] = TypeError) -> bool:
    """``x`` if it is a bool (Python or numpy); 0/1 and strings are refused."""
    return check_scalar(x, name, "bool", type_error=type_error)
