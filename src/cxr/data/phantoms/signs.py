"""The 14 radiographic signs: each draws on the canvas and returns the mask its box comes from."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cxr.data.phantoms.anatomy import Anatomy
from cxr.data.phantoms.canvas import _atelectasis_side, _Canvas, _inside, _site_rng, _smooth_noise
from cxr.labels import LABELS


# ---- the 14 signs: each draws on the canvas and returns the mask its box is taken from ------
def _sign_atelectasis(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Plate-like band / wedge in the lower zone (the volume loss is in _reshape_for_findings)."""
    site = _site_rng(anatomy, "Atelectasis")
    side = _atelectasis_side(anatomy)
    geo = c.geo
    xs = geo.lung_center_x(side)
    y0 = geo.lung_center_y() + geo.lung_half_height() * site.uniform(0.05, 0.45)
    slope = site.uniform(-0.3, 0.3)
    lateral = np.clip((c.x - xs) * side / geo.lung_half_width + 0.5, 0, 1.2)
    thickness = (0.006 + 0.02 * s) * (0.5 + lateral)  # wider toward the chest wall: a wedge
    band = np.clip(1 - np.abs((c.y - y0) - slope * (c.x - xs)) / thickness, 0, 1)
    c.opacify(band, 0.5 + 0.5 * s, sides=(side,))
    return band * c.lungs[side]


def _sign_cardiomegaly(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """The enlarged silhouette itself is drawn by the geometry; the box is the heart."""
    return c.heart


def _sign_consolidation(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Dense lobar opacity bounded by a fissure, with dark air bronchograms inside."""
    site = _site_rng(anatomy, "Consolidation")
    side = int(site.choice([-1, 1]))
    lower = site.random() < 0.65
    geo = c.geo
    fissure_y = geo.lung_center_y() + site.uniform(-0.1, 0.05) * geo.lung_half_height()
    tilt = site.uniform(0.2, 0.6) * side
    signed = (c.y - fissure_y) - tilt * (c.x - geo.lung_center_x(side))
    lobe = _inside(signed if lower else -signed, 4 * c.edge)
    patchy = np.clip(0.85 + 0.15 * _smooth_noise(rng, c.size, 6), 0, 1)
    region = lobe * patchy
    c.opacify(region, 0.35 + 0.45 * s, sides=(side,))
    region = region * c.lungs[side]
    hilum_x, hilum_y = geo.lung_center_x(side) - side * 0.5 * geo.lung_half_width, fissure_y
    angle = np.arctan2(c.y - hilum_y, (c.x - hilum_x) * side)
    wobble = 1.5 * _smooth_noise(rng, c.size, 5)
    bronchi = np.clip(1 - np.abs(np.sin(4 * angle + wobble)) / 0.15, 0, 1)
    c.density -= (0.25 + 0.2 * s) * geo.air * bronchi * region
    return region


def _sign_edema(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Bilateral perihilar haze fading toward the periphery ("bat wings")."""
    geo = c.geo
    spread_x, spread_y = 0.07 + 0.05 * s, 0.11 + 0.05 * s
    haze = np.zeros_like(c.density)
    for side in (-1, 1):
        hx = geo.lung_center_x(side) - side * 0.35 * geo.lung_half_width
        gx = np.exp(-0.5 * ((c.x - hx) / spread_x) ** 2)
        gy = np.exp(-0.5 * ((c.y - geo.lung_center_y()) / spread_y) ** 2)
        haze = haze + gx * gy
    fluffy = np.clip(0.75 + 0.25 * _smooth_noise(rng, c.size, 10), 0, 1.2)
    c.opacify(haze * fluffy, 0.12 + 0.35 * s)
    return haze * c.lung


def _sign_effusion(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Basal fluid with a meniscus climbing the lateral wall; the costophrenic angle blunts."""
    site = _site_rng(anatomy, "Effusion")
    sides = (-1, 1) if site.random() < 0.3 else (int(site.choice([-1, 1])),)
    geo = c.geo
    fluid_all = np.zeros_like(c.density)
    for side in sides:
        lateral = np.clip((c.x - geo.lung_center_x(side)) * side / geo.lung_half_width, -1, 1)
        level = geo.domes[side] - (0.008 + 0.08 * s * s)
        meniscus = level - (0.01 + 0.04 * s) * ((lateral + 1) / 2) ** 2
        fluid = _inside(c.y - meniscus, 0.03)
        c.opacify(fluid, 0.45 + 0.4 * s, sides=(side,))
        fluid_all = fluid_all + fluid * c.lungs[side]
    return fluid_all


def _sign_emphysema(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Hyperinflated hyperlucent lungs; drawn by the geometry. The box spans both lungs."""
    return c.lung


def _sign_fibrosis(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Reticular net (zero crossings of a fine random field), peripheral and basal."""
    geo = c.geo
    net = np.clip(1 - np.abs(_smooth_noise(rng, c.size, 36)) / 0.5, 0, 1)
    basal = (c.y - geo.lung_center_y()) / geo.lung_half_height()
    peripheral = np.clip(np.abs(c.x - geo.cx) / geo.thorax, 0, 1)
    zone = np.clip(0.1 + 0.6 * basal + 0.6 * peripheral, 0, 1)
    c.opacify(net * zone, 0.25 + 0.45 * s)
    return zone * c.lung


def _sign_hernia(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Hiatal hernia: a retrocardiac gas bubble with a horizontal air-fluid level."""
    site = _site_rng(anatomy, "Hernia")
    half_width, half_height = c.heart_half
    bx = c.heart_cx - 0.3 * half_width + site.uniform(-0.03, 0.03)
    by = c.heart_cy + 0.35 * half_height
    radius = 0.03 + 0.03 * s
    bubble = c.disk(bx, by, radius)
    level = by + radius * site.uniform(-0.1, 0.4)
    gas = bubble * _inside(level - c.y, 2 * c.edge)
    c.density -= (0.12 + 0.2 * s) * gas
    wall = np.clip(1 - np.abs(np.sqrt((c.x - bx) ** 2 + (c.y - by) ** 2) - radius) / 0.006, 0, 1)
    c.density += 0.04 * s * wall
    return bubble


def _sign_infiltration(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Patchy ill-defined opacities in one zone of one or both lungs (patches vary per film)."""
    site = _site_rng(anatomy, "Infiltration")
    sides = (-1, 1) if site.random() < 0.4 else (int(site.choice([-1, 1])),)
    geo = c.geo
    zone_y = geo.lung_center_y() + geo.lung_half_height() * site.uniform(-0.5, 0.5)
    window = np.exp(-0.5 * ((c.y - zone_y) / 0.13) ** 2)
    patches = np.clip(_smooth_noise(rng, c.size, 8) * 0.6 + 0.3, 0, 1)
    c.opacify(window * patches, 0.25 + 0.4 * s, sides=sides)
    return window * sum(c.lungs[side] for side in sides)


def _lobulated(c: _Canvas, site: np.random.Generator, cx: float, cy: float,
               radius: float) -> np.ndarray:
    mask = c.disk(cx, cy, radius, soft=2.0)
    for _ in range(2):
        angle = site.uniform(0, 2 * np.pi)
        ox, oy = 0.5 * radius * np.cos(angle), 0.5 * radius * np.sin(angle)
        mask = np.maximum(mask, c.disk(cx + ox, cy + oy, 0.7 * radius, soft=2.0))
    return mask


def _sign_mass(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """One large (> 3 cm) lobulated opacity."""
    site = _site_rng(anatomy, "Mass")
    side = int(site.choice([-1, 1]))
    cx, cy = c.point_in_lung(site, side, reach=0.6)
    mass = _lobulated(c, site, cx, cy, radius=site.uniform(0.035, 0.055) * (0.8 + 0.4 * s))
    c.density += (0.08 + 0.2 * s) * mass
    return mass


def _sign_nodule(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """One to three small, well-defined round opacities."""
    site = _site_rng(anatomy, "Nodule")
    count = 1 + int(site.random() < 0.35) + int(site.random() < 0.15)
    nodules = np.zeros_like(c.density)
    for _ in range(count):
        cx, cy = c.point_in_lung(site, int(site.choice([-1, 1])))
        radius = site.uniform(0.012, 0.026) * (0.8 + 0.4 * s)
        nodules = np.maximum(nodules, c.disk(cx, cy, radius))
    c.density += (0.1 + 0.25 * s) * nodules
    return nodules


def _sign_pleural_thickening(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Soft-tissue band along the lateral chest wall (or an apical cap)."""
    site = _site_rng(anatomy, "Pleural_Thickening")
    side = int(site.choice([-1, 1]))
    geo = c.geo
    depth = (1 - np.sqrt(c.lung_r2[side])) * geo.lung_half_width  # ~distance to the edge
    # Lumpy inner margin: the thickness swells and thins along the wall (a smooth border
    # band would read as a smaller lung, which normal anatomy also gives).
    lumps = np.clip(1 + 0.8 * _smooth_noise(rng, c.size, 14), 0.2, 2.2)
    thickness = (0.025 + 0.035 * s) * lumps
    shell = np.clip(1 - depth / thickness, 0, 1)
    dy = (c.y - geo.lung_center_y()) / geo.lung_half_height()
    if site.random() < 0.7:  # along the lateral wall, over a stretch of it
        lateral = (c.x - geo.lung_center_x(side)) * side / geo.lung_half_width
        start = site.uniform(-0.7, 0.1)
        shell = shell * (lateral > 0.3) * ((dy > start) & (dy < start + site.uniform(0.5, 0.9)))
    else:  # apical cap
        shell = shell * (dy < -0.6)
    c.opacify(shell, 0.6 + 0.4 * s, sides=(side,))
    return shell * c.lungs[side]


def _sign_pneumonia(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Focal fluffy airspace opacity: denser and rounder than infiltration, softer than lobar
    consolidation (the three overlap on real films, and in NIH's labels)."""
    site = _site_rng(anatomy, "Pneumonia")
    side = int(site.choice([-1, 1]))
    cx, cy = c.point_in_lung(site, side, reach=0.6)
    radius = site.uniform(0.05, 0.09)
    blob = np.exp(-0.5 * ((c.x - cx) ** 2 + (c.y - cy) ** 2) / radius**2)
    fluffy = np.clip(0.6 + 0.4 * _smooth_noise(rng, c.size, 12), 0, 1)
    c.opacify(blob * fluffy, 0.4 + 0.5 * s, sides=(side,))
    return blob * c.lungs[side]


def _sign_pneumothorax(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Apical/lateral rim of air without lung markings, bounded by a thin visceral pleural line."""
    site = _site_rng(anatomy, "Pneumothorax")
    side = int(site.choice([-1, 1]))
    geo = c.geo
    shrink = 0.06 + 0.22 * s
    # The lung collapses toward its hilum / base: the rim is widest at the apex and laterally.
    anchor_x = geo.lung_center_x(side) - side * 0.6 * geo.lung_half_width
    anchor_y = geo.domes[side]
    inner_x = anchor_x + (geo.lung_center_x(side) - anchor_x) * (1 - shrink)
    inner_y = anchor_y + (geo.lung_center_y() - anchor_y) * (1 - shrink)
    a, b = geo.lung_half_width * (1 - shrink), geo.lung_half_height() * (1 - shrink)
    r2 = ((c.x - inner_x) / a) ** 2 + ((c.y - inner_y) / b) ** 2
    outside_collapsed_lung = 1 - _inside(1 - r2, 4 * c.edge / a)
    c.density -= outside_collapsed_lung * c.markings
    c.opacify(outside_collapsed_lung, -(0.08 + 0.15 * s), sides=(side,))  # negative: lucent
    rim = outside_collapsed_lung * c.lungs[side]
    pleural_line = np.clip(1 - np.abs(r2 - 1) / (3 * c.edge / a), 0, 1) * c.lungs[side]
    c.density += (0.05 + 0.07 * s) * pleural_line
    return rim


SIGNS: dict[str, Callable[..., np.ndarray]] = {
    "Atelectasis": _sign_atelectasis,
    "Cardiomegaly": _sign_cardiomegaly,
    "Consolidation": _sign_consolidation,
    "Edema": _sign_edema,
    "Effusion": _sign_effusion,
    "Emphysema": _sign_emphysema,
    "Fibrosis": _sign_fibrosis,
    "Hernia": _sign_hernia,
    "Infiltration": _sign_infiltration,
    "Mass": _sign_mass,
    "Nodule": _sign_nodule,
    "Pleural_Thickening": _sign_pleural_thickening,
    "Pneumonia": _sign_pneumonia,
    "Pneumothorax": _sign_pneumothorax,
}
assert tuple(SIGNS) == LABELS
