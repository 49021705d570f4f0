"""Film geometry, the drawing canvas and the normal anatomy every phantom starts from."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr.data.phantoms.anatomy import Anatomy
from cxr.labels import INDEX, LABELS, N_LABELS


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------
@dataclass
class _Geometry:
    """One film's geometry: the patient's anatomy after pose, breath, view and disease."""

    cx: float
    thorax: float          # half width of the rib cage
    lung_top: float
    domes: dict[int, float]  # side -> dome height; side -1 = image left = patient's right
    dome_curvature: float
    heart_ratio: float
    heart_height: float
    clavicle_y: float
    air: float = 0.42      # how much darker aerated lung is than soft tissue
    markings: float = 1.0  # strength of the normal vessel markings
    heart_shift: float = 0.0

    @property
    def lung_offset(self) -> float:
        return 0.58 * self.thorax

    @property
    def lung_half_width(self) -> float:
        return 0.42 * self.thorax

    def lung_center_y(self) -> float:
        return (self.lung_top + max(self.domes.values()) + 0.06) / 2

    def lung_half_height(self) -> float:
        return (max(self.domes.values()) + 0.06 - self.lung_top) / 2

    def lung_center_x(self, side: int) -> float:
        return self.cx + side * self.lung_offset


def _strengths(rng: np.random.Generator, findings: frozenset[str],
               strength_range: tuple[float, float]) -> dict[str, float]:
    # Drawn for all 14 in canonical order, so the stream (and the pose drawn after it) does
    # not depend on which findings are present.
    drawn = rng.uniform(*strength_range, size=N_LABELS)
    return {name: float(drawn[k]) for k, name in enumerate(LABELS) if name in findings}


def _site_rng(anatomy: Anatomy, finding: str, part: int = 0) -> np.random.Generator:
    """The patient's own stream for where a finding sits, so a chronic lesion stays put."""
    return np.random.default_rng([anatomy.site_seed, INDEX[finding], part])


def _geometry(rng: np.random.Generator, anatomy: Anatomy, view: str,
              strengths: dict[str, float]) -> _Geometry:
    """Per-film jitter of the anatomy, the AP projection, and signs that change anatomy."""
    shift_y = rng.normal(0, 0.01)
    inspiration = rng.normal(0, 0.015)  # a deeper breath lowers the domes
    dome = anatomy.diaphragm + shift_y + inspiration
    geo = _Geometry(
        cx=anatomy.center_x + rng.normal(0, 0.008),
        thorax=anatomy.thorax_half_width * (1 + rng.normal(0, 0.01)),
        lung_top=anatomy.lung_top + shift_y,
        domes={-1: dome, 1: dome + 0.02},
        dome_curvature=0.05,
        heart_ratio=anatomy.heart_ratio,
        heart_height=anatomy.heart_height,
        clavicle_y=anatomy.clavicle_y + shift_y,
    )
    if view == "AP":
        # Front-to-back beam, heart far from the detector: magnified. Supine films are also
        # taken in shallower inspiration and show the clavicles higher.
        geo.heart_ratio *= 1.12
        geo.heart_height *= 1.05
        geo.domes = {side: y - 0.025 for side, y in geo.domes.items()}
        geo.clavicle_y -= 0.03
    _reshape_for_findings(geo, anatomy, strengths)
    return geo


def _reshape_for_findings(geo: _Geometry, anatomy: Anatomy, strengths: dict[str, float]) -> None:
    if "Cardiomegaly" in strengths:
        s = strengths["Cardiomegaly"]
        geo.heart_ratio += 0.04 + 0.12 * s
        geo.heart_height *= 1 + 0.25 * s
    if "Emphysema" in strengths:
        # Hyperinflation: big, dark lungs with few markings, flat low domes, narrow heart.
        s = strengths["Emphysema"]
        geo.domes = {side: y + 0.01 + 0.04 * s for side, y in geo.domes.items()}
        geo.dome_curvature *= 1 - 0.8 * s
        geo.thorax *= 1 + 0.04 * s
        geo.lung_top -= 0.015 * s
        geo.air *= 1 + 0.15 * s
        geo.markings *= 1 - 0.5 * s
        geo.heart_ratio *= 1 - 0.08 * s
    if "Fibrosis" in strengths:
        s = strengths["Fibrosis"]
        geo.domes = {side: y - 0.02 * s for side, y in geo.domes.items()}
    if "Atelectasis" in strengths:
        # Volume loss: the collapsed side's dome rises and the mediastinum shifts toward it.
        s = strengths["Atelectasis"]
        side = _atelectasis_side(anatomy)
        geo.domes[side] -= 0.035 * s
        geo.heart_shift += 0.015 * s * side


def _atelectasis_side(anatomy: Anatomy) -> int:
    return int(_site_rng(anatomy, "Atelectasis", part=1).choice([-1, 1]))


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1]: x as a row, y as a column (broadcast to size^2)."""
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size).astype(np.float32)
    return axis[None, :], axis[:, None]


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance random field with features ~size/cells pixels wide (cheap: upsampled)."""
    cells = max(2, min(cells, size // 2))
    coarse = rng.standard_normal((cells, cells), dtype=np.float32)
    field_ = np.asarray(Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC))
    return field_ / (float(field_.std()) + 1e-6)


def _inside(signed: np.ndarray, width: float) -> np.ndarray:
    """Soft step: 1 well inside (signed > 0), 0 outside, linear over width."""
    step = signed * np.float32(1 / width)  # one new array, then in place: this runs a lot
    step += np.float32(0.5)
    return np.clip(step, 0.0, 1.0, out=step)


class _Canvas:
    """The film being drawn: attenuation ("density", white = dense) plus the masks signs use."""

    def __init__(self, size: int, geo: _Geometry):
        self.size = size
        self.geo = geo
        self.x, self.y = _grid(size)
        self.edge = 1.5 / size
        self.lungs: dict[int, np.ndarray] = {}
        self.lung_r2: dict[int, np.ndarray] = {}
        for side in (-1, 1):
            self.lung_r2[side], self.lungs[side] = self._lung(side)
        self.lung = self.lungs[-1] + self.lungs[1]
        self.heart = self._heart()
        # Aerated lung the heart does not cover: where opacities can show.
        uncovered = geo.air * (1 - self.heart)
        self.air_by_side = {side: uncovered * self.lungs[side] for side in (-1, 1)}
        self.air = self.air_by_side[-1] + self.air_by_side[1]
        self.density = np.zeros((size, size), dtype=np.float32)
        self.markings = np.zeros((size, size), dtype=np.float32)

    def _lung(self, side: int) -> tuple[np.ndarray, np.ndarray]:
        """(normalized lateral distance squared, soft mask) of one lung."""
        geo = self.geo
        top, bottom = geo.lung_top, geo.lung_center_y() + geo.lung_half_height()
        t = np.clip((self.y - top) / (bottom - top), 0, 1)
        # Narrow rounded apex widening to the full base; a superellipse gives the straight-ish
        # medial border and the full lateral curve.
        half_width = geo.lung_half_width * (0.12 + 0.88 * np.sqrt(np.minimum(t / 0.5, 1)))
        dx = (self.x - geo.lung_center_x(side)) / half_width
        across = np.abs(dx) ** 3
        lung = _inside(1 - across, 4 * self.edge / geo.lung_half_width)
        lung = lung * _inside(self.y - top, 2 * self.edge)
        # The dome is highest near the middle of each lung and falls off laterally; where it
        # meets the lateral lung edge it makes the sharp costophrenic angle.
        dx_base = (self.x - geo.lung_center_x(side)) / geo.lung_half_width
        dome = geo.domes[side] + geo.dome_curvature * (dx_base * dx_base)
        return dx * dx, lung * _inside(dome - self.y, 2 * self.edge)

    def _heart(self) -> np.ndarray:
        geo = self.geo
        half_width = geo.heart_ratio * geo.thorax
        # The heart sits two thirds to the patient's left (image right), on the left dome.
        self.heart_cx = geo.cx + 0.3 * half_width + geo.heart_shift
        self.heart_cy = geo.domes[1] - 0.7 * geo.heart_height
        self.heart_half = (half_width, geo.heart_height)
        dx = (self.x - self.heart_cx) / half_width
        dy = (self.y - self.heart_cy) / geo.heart_height
        return _inside(1 - (dx * dx + dy * dy), 4 * self.edge / half_width)

    def opacify(self, region: np.ndarray, amount: float, sides: Iterable[int] = (-1, 1)) -> None:
        """Replace a fraction of the aerated lung (of the given sides) under region by fluid or
        tissue. region must not include the lung mask: the air map already does, and
        multiplying twice would leave a dark seam along the soft lung edge."""
        for side in sides:
            self.density += amount * region * self.air_by_side[side]

    def point_in_lung(self, site: np.random.Generator, side: int,
                      reach: float = 0.7) -> tuple[float, float]:
        """A point well inside one lung, in image fractions (rejection sampling)."""
        geo = self.geo
        while True:
            u, v = site.uniform(-1, 1, size=2)
            if u * u + v * v < reach * reach and v < 0.5:
                return (geo.lung_center_x(side) + u * geo.lung_half_width,
                        geo.lung_center_y() + v * geo.lung_half_height())

    def disk(self, cx: float, cy: float, radius: float, soft: float = 1.0) -> np.ndarray:
        d2 = (self.x - cx) ** 2 + (self.y - cy) ** 2
        return _inside(radius - np.sqrt(d2), soft * 2 * self.edge)


def _draw_anatomy(canvas: _Canvas, rng: np.random.Generator, anatomy: Anatomy) -> None:
    geo, x, y, size = canvas.geo, canvas.x, canvas.y, canvas.size
    lung_cy, lung_b = geo.lung_center_y(), geo.lung_half_height()
    # Soft tissue of the trunk; outside it the detector sees air (black).
    body_a = geo.thorax + anatomy.body_margin
    body = _inside(1 - ((x - geo.cx) / body_a) ** 4 - ((y - 0.62) / 0.75) ** 2, 0.03)
    canvas.density += 0.62 * body
    canvas.density -= canvas.air
    # Lung markings: vessels branching from the hila, a network thinning toward the periphery.
    vessels = np.clip(1 - np.abs(_smooth_noise(rng, size, 20)) / 0.8, 0, 1) ** 3
    toward_hilum = 1 - 0.7 * np.clip(np.abs(x - geo.cx) / geo.thorax, 0, 1)
    canvas.markings = (0.06 * geo.markings) * vessels * toward_hilum * canvas.lung
    canvas.density += canvas.markings
    # Posterior ribs: curved bands, denser over the lungs where there is contrast to see them.
    thorax = _inside(1 - ((x - geo.cx) / (1.05 * geo.thorax)) ** 2
                     - ((y - lung_cy) / (1.15 * lung_b)) ** 2, 0.05)
    # They leave the spine rising a little, then arc down toward the chest wall.
    lateral = np.abs(x - geo.cx)
    phase = (y - 0.3 * lateral + 1.3 * lateral**2) / anatomy.rib_spacing + anatomy.rib_phase
    ribs = np.clip((np.cos(2 * np.pi * phase) - 0.3) / 0.7, 0, 1)
    spine = np.clip(1 - lateral / 0.045, 0, 1) ** 0.5
    canvas.density += 0.06 * ribs * thorax * (1 - spine)
    # Spine and mediastinum down the midline.
    canvas.density += 0.10 * spine * body
    # Clavicles rising laterally from the sternal notch.
    clavicle_line = geo.clavicle_y - 0.18 * (lateral - 0.05)
    clavicles = np.clip(1 - np.abs(y - clavicle_line) / 0.016, 0, 1)
    clavicles = clavicles * ((lateral > 0.03) & (lateral < 0.33))
    canvas.density += 0.12 * clavicles
