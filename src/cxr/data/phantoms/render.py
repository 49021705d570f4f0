"""render_image: one film (anatomy + signs + exposure) and the boxes of its drawn findings."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from cxr.data.phantoms.anatomy import Anatomy
from cxr.data.phantoms.canvas import _Canvas, _draw_anatomy, _geometry, _smooth_noise, _strengths
from cxr.data.phantoms.signs import SIGNS
from cxr.labels import INDEX, LABELS, N_LABELS


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """(x, y, w, h) in pixels of where mask reaches a quarter of its peak (soft edges included)."""
    peak = float(mask.max())
    hit = mask >= 0.25 * peak if peak > 0 else np.ones_like(mask, dtype=bool)
    cols = np.flatnonzero(hit.any(axis=0))
    rows = np.flatnonzero(hit.any(axis=1))
    return (float(cols[0]), float(rows[0]), float(cols[-1] - cols[0] + 1),
            float(rows[-1] - rows[0] + 1))


def _expose(canvas: _Canvas, rng: np.random.Generator, anatomy: Anatomy,
            view: str) -> np.ndarray:
    """Density -> 8-bit film: exposure, contrast (gamma), scatter mottle and quantum noise."""
    gain = anatomy.exposure * rng.uniform(0.9, 1.1)
    offset = rng.normal(0.0, 0.03)
    gamma = rng.uniform(0.8, 1.25)
    sigma = rng.uniform(0.012, 0.03) + (0.01 if view == "AP" else 0.0)  # portable films
    size = canvas.size
    film = canvas.density * gain + offset
    film += 0.03 * _smooth_noise(rng, size, 4)
    film += sigma * rng.standard_normal((size, size), dtype=np.float32)
    film = np.clip(film, 0.0, 1.0) ** gamma
    return (film * 255 + 0.5).astype(np.uint8)


def render_image(rng: np.random.Generator, findings: Iterable[str], anatomy: Anatomy,
                 size: int = 256, view: str = "PA",
                 strength_range: tuple[float, float] = (0.15, 1.0),
                 ) -> tuple[np.ndarray, dict[str, tuple[float, float, float, float]]]:
    """Draw one film of a patient with the given findings (canonical names).

    Returns the uint8 image (size x size) and, per finding, its box (x, y, w, h) in pixels.
    Where a lesion sits comes from anatomy.site_seed (a patient's nodule stays put across
    follow-ups); its strength, the pose and the noise come from rng.

    rng is split into independent streams for the pose, each sign and the film noise, so two
    calls with equally seeded rngs whose findings differ by one finding give images that differ
    only by that sign (and the anatomy it changes): a counterfactual pair.
    """
    present = frozenset(findings)
    unknown = sorted(present - set(LABELS))
    if unknown:
        raise ValueError(f"render_image: unknown findings {unknown}; expected names from "
                         f"{', '.join(LABELS)}")
    if view not in ("PA", "AP"):
        raise ValueError(f"render_image: view={view!r} is invalid; expected 'PA' or 'AP'")
    if size < 32:
        raise ValueError(f"render_image: size={size!r} is invalid; expected at least 32")
    pose_rng, film_rng, *sign_rngs = rng.spawn(2 + N_LABELS)
    strengths = _strengths(pose_rng, present, strength_range)
    geo = _geometry(pose_rng, anatomy, view, strengths)
    canvas = _Canvas(size, geo)
    _draw_anatomy(canvas, pose_rng, anatomy)
    boxes = {name: _box(SIGNS[name](canvas, anatomy, sign_rngs[INDEX[name]], s))
             for name, s in strengths.items()}
    return _expose(canvas, film_rng, anatomy, view), boxes
