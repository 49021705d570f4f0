"""Anatomy: one patient's body, shared by all of their films."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cxr.data.phantoms.reference import _STREAM_ANATOMY


# --------------------------------------------------------------------------------------------
# Anatomy: one patient's body, shared by all of their films
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Anatomy:
    """A patient's chest, in fractions of the image width/height."""

    center_x: float = 0.5            # midline
    thorax_half_width: float = 0.36  # half the rib cage's inner width
    lung_top: float = 0.13           # lung apices
    diaphragm: float = 0.72          # right hemidiaphragm dome (the left sits a little lower)
    heart_ratio: float = 0.44        # cardiothoracic ratio on a PA film (normal < 0.5)
    heart_height: float = 0.12       # half the cardiac silhouette's height
    body_margin: float = 0.07        # chest-wall soft tissue outside the ribs
    rib_spacing: float = 0.075
    rib_phase: float = 0.0
    clavicle_y: float = 0.14
    exposure: float = 1.25           # film gain: body habitus and technique
    site_seed: int = 0               # where this patient's lesions sit, film after film


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """A random patient: body size, heart size, lung shape, position and exposure vary."""
    return Anatomy(
        center_x=float(rng.normal(0.5, 0.015)),
        thorax_half_width=float(rng.uniform(0.31, 0.39)),
        lung_top=float(rng.uniform(0.09, 0.16)),
        diaphragm=float(rng.uniform(0.66, 0.76)),
        heart_ratio=float(rng.uniform(0.37, 0.47)),
        heart_height=float(rng.uniform(0.11, 0.14)),
        body_margin=float(rng.uniform(0.04, 0.10)),
        rib_spacing=float(rng.uniform(0.065, 0.085)),
        rib_phase=float(rng.uniform(0, 1)),
        clavicle_y=float(rng.uniform(0.11, 0.17)),
        exposure=float(rng.uniform(1.05, 1.45)),
        site_seed=int(rng.integers(2**62)),
    )


def patient_anatomy(seed: int, patient_id: int) -> Anatomy:
    """The anatomy of patient_id in the dataset generated with seed."""
    return sample_anatomy(np.random.default_rng(
        np.random.SeedSequence([seed, _STREAM_ANATOMY, patient_id])))
