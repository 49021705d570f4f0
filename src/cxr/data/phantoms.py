"""Synthetic chest X-ray "phantoms" written in the exact NIH ChestX-ray14 layout.

The pipeline has to run end to end, and its tests have to mean something, on a machine without
the 45 GB NIH download. This module writes a small dataset that the real NIH reader reads
unchanged, with the statistical shape of the real one (label prevalence, co-occurrence,
findings per image, images per patient, persistence across follow-ups, views, sex, age) and a
drawn radiographic sign for each of the 14 findings.

Files written under ``out_dir``:

* ``Data_Entry_2017.csv``: the NIH v2020 columns. ``Finding Labels`` are the *published*
  labels: the drawn truth with ``label_noise`` applied (NIH labels were text-mined from
  reports, so they are noisy too). ``OriginalImage[Width,Height]`` is the PNG size, so boxes
  map 1:1 onto the PNGs; the pixel spacing is the NIH detector's field of view divided by it.
* ``BBox_List_2017.csv``: the NIH box file's format and quirks (``Bbox [x,y,w,h]`` split over
  four fields, three trailing empty fields, ``Infiltrate`` for Infiltration), with one box for
  every *drawn* finding (truth, not the noisy labels). Boxes are in PNG pixels.
* ``images/PPPPPPPP_FFF.png``: 8-bit grayscale, ``image_size`` square.
* ``phantom_truth.csv`` (not an NIH file; the NIH reader never opens it): ``Image Index`` and
  the drawn ``Finding Labels`` without label noise, for tests and Grad-CAM checks.

Everything is deterministic: the plan (labels, demographics) comes from one seeded stream, and
each image from its own stream seeded by (seed, patient, follow-up), so the files are
byte-identical whatever the number of rendering workers.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.labels import INDEX, LABELS, N_LABELS, NO_FINDING

# --------------------------------------------------------------------------------------------
# NIH statistics (Data_Entry_2017_v2020.csv: 112,120 images, 30,805 patients), copied here so
# the generator never needs ../shared at run time. Order of per-class tuples: cxr.labels.LABELS.
# --------------------------------------------------------------------------------------------
NIH_IMAGES = 112_120
NIH_POSITIVES = (11559, 2776, 4667, 2303, 13317, 2516, 1686, 227, 19894, 5782, 6331, 3385, 1431,
                 5302)
# Images with 0, 1, ..., 9 findings (60,361 are "No Finding").
NIH_FINDINGS_PER_IMAGE = (60361, 30963, 14306, 4856, 1247, 301, 67, 16, 1, 2)
# Patients with 1, 2, ..., 9 images, then 10 or more.
NIH_IMAGES_PER_PATIENT = (17503, 4113, 2100, 1330, 938, 787, 608, 494, 387, 2545)
# P(finding on a patient's next follow-up | finding on this one).
NIH_PERSISTENCE = (0.374, 0.305, 0.281, 0.304, 0.487, 0.435, 0.197, 0.465, 0.388, 0.416, 0.319,
                   0.234, 0.13, 0.556)
# Images carrying both findings (symmetric; the diagonal is NIH_POSITIVES).
NIH_COOCCURRENCE = (
    (11559, 370, 1223, 221, 3275, 424, 220, 40, 3264, 739, 590, 496, 262, 774),
    (370, 2776, 169, 127, 1063, 44, 52, 7, 587, 102, 108, 111, 41, 49),
    (1223, 169, 4667, 162, 1287, 103, 79, 4, 1221, 610, 428, 251, 123, 223),
    (221, 127, 162, 2303, 593, 30, 9, 3, 981, 129, 131, 64, 340, 33),
    (3275, 1063, 1287, 593, 13317, 359, 188, 21, 4000, 1254, 912, 849, 269, 996),
    (424, 44, 103, 30, 359, 2516, 36, 4, 449, 215, 115, 151, 23, 747),
    (220, 52, 79, 9, 188, 36, 1686, 8, 345, 117, 166, 176, 11, 80),
    (40, 7, 4, 3, 21, 4, 8, 227, 33, 25, 10, 8, 3, 9),
    (3264, 587, 1221, 981, 4000, 449, 345, 33, 19894, 1159, 1546, 750, 605, 946),
    (739, 102, 610, 129, 1254, 215, 117, 25, 1159, 5782, 906, 452, 71, 431),
    (590, 108, 428, 131, 912, 115, 166, 10, 1546, 906, 6331, 411, 70, 341),
    (496, 111, 251, 64, 849, 151, 176, 8, 750, 452, 411, 3385, 48, 289),
    (262, 41, 123, 340, 269, 23, 11, 3, 605, 71, 70, 48, 1431, 41),
    (774, 49, 223, 33, 996, 747, 80, 9, 946, 431, 341, 289, 41, 5302),
)
NIH_AP_FRACTION = 44_810 / NIH_IMAGES
NIH_MALE_FRACTION = 63_340 / NIH_IMAGES
# Age: mean 46.6 years, 5th/95th percentiles 18/72 -> a normal with sd ~16.5 fits both tails.
NIH_AGE_MEAN, NIH_AGE_SD = 46.6, 16.5
# NIH films are ~2500-3000 px at ~0.143 mm: a ~430 mm field of view.
NIH_FIELD_OF_VIEW_MM = 430.0

DATA_ENTRY_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,"
                     "Patient Gender,View Position,OriginalImage[Width,Height],"
                     "OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
TRUTH_HEADER = "Image Index,Finding Labels"
# The real box file spells one finding differently from Data_Entry; mimic it.
BBOX_SPELLING = {"Infiltration": "Infiltrate"}
IMAGE_NAME = re.compile(r"^\d{8}_\d{3}\.png$")

# 30 Hernia images leave ~3 for a 10% validation split: enough for an AUC, barely.
DEFAULT_MIN_POSITIVES = 30

# Independent random streams, so that e.g. changing label noise never moves a lesion.
_STREAM_PLAN, _STREAM_NOISE, _STREAM_ANATOMY, _STREAM_IMAGE = 0, 1, 2, 3


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Defaults: ~2,800 images of 1,000 patients, 256 px.

    Invalid values raise ValueError naming the field, the value and what is allowed.
    """

    n_patients: int = 1000
    image_size: int = 256
    seed: int = 0
    # Per class, this fraction of the drawn positives is published as negative, and as many
    # drawn negatives as positive: per-class counts stay exact, the labels get noisy.
    label_noise: float = 0.02
    # Floor on drawn positives per class, so rare classes (Hernia) have a few cases per split.
    # None: DEFAULT_MIN_POSITIVES, lowered to 2% of the expected images for small datasets.
    min_positives: int | None = None
    # Caps NIH's long tail (max 184 films); with 12 the mean is ~2.8 images per patient.
    max_images_per_patient: int = 12
    # Range of a sign's strength; low values are subtle (small, faint, thin).
    strength_range: tuple[float, float] = (0.15, 1.0)
    ap_fraction: float = NIH_AP_FRACTION
    # Parallel rendering workers (threads); the output does not depend on it.
    processes: int = 1

    def __post_init__(self) -> None:
        _require_int("n_patients", self.n_patients, 1, "a positive integer")
        _require_int("image_size", self.image_size, 32, "an integer of at least 32 pixels")
        if self.image_size > 4096:
            _fail("image_size", self.image_size, "at most 4096 pixels")
        _require_int("seed", self.seed, 0, "a non-negative integer")
        _require_fraction("label_noise", self.label_noise, "a fraction in [0, 0.5)", upper=0.5)
        _require_int("max_images_per_patient", self.max_images_per_patient, 1,
                     "a positive integer")
        expected = expected_images(self.n_patients, self.max_images_per_patient)
        if self.min_positives is not None:
            _require_int("min_positives", self.min_positives, 0,
                         "a non-negative integer or None")
        if self.min_positives is not None and self.min_positives * 10 > expected:
            _fail("min_positives", self.min_positives,
                  f"at most a tenth of the ~{expected:.0f} images that n_patients="
                  f"{self.n_patients} gives (raise n_patients or lower min_positives)")
        _require_fraction("ap_fraction", self.ap_fraction, "a fraction in [0, 1]", upper=1.0,
                          inclusive=True)
        low_high = self.strength_range
        if (not isinstance(low_high, tuple | list) or len(low_high) != 2
                or not all(isinstance(v, int | float) for v in low_high)
                or not 0 < low_high[0] <= low_high[1] <= 2):
            _fail("strength_range", low_high, "a pair (low, high) with 0 < low <= high <= 2")
        _require_int("processes", self.processes, 1, "a positive integer")

    @property
    def floor(self) -> int:
        """The effective min_positives."""
        if self.min_positives is not None:
            return self.min_positives
        expected = expected_images(self.n_patients, self.max_images_per_patient)
        return min(DEFAULT_MIN_POSITIVES, int(0.02 * expected))


def _fail(name: str, value, allowed: str):
    raise ValueError(f"PhantomConfig.{name}={value!r} is invalid; expected {allowed}")


def _require_int(name: str, value, minimum: int, allowed: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        _fail(name, value, allowed)


def _require_fraction(name: str, value, allowed: str, upper: float,
                      inclusive: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    ok = ok and (value <= upper if inclusive else value < upper)
    if not ok:
        _fail(name, value, allowed)


# --------------------------------------------------------------------------------------------
# The plan: who has which images and which findings (no pixels yet)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedImage:
    """One row of Data_Entry plus the drawn truth."""

    image_index: str
    patient_id: int
    follow_up: int
    age: int
    gender: str
    view: str
    truth: tuple[str, ...]      # findings drawn on the image (canonical order)
    labels: tuple[str, ...]     # findings published in the CSV (truth + label noise)


def _images_per_patient_probabilities(cap: int) -> np.ndarray:
    """NIH's images-per-patient histogram, its 10+ bin spread evenly over 10..cap."""
    counts = np.array(NIH_IMAGES_PER_PATIENT[:9], dtype=float)
    tail = NIH_IMAGES_PER_PATIENT[9]
    if cap <= 9:
        probs = counts[:cap].copy()
        probs[-1] += counts[cap:].sum() + tail
    else:
        probs = np.concatenate([counts, np.full(cap - 9, tail / (cap - 9))])
    return probs / probs.sum()


def expected_images(n_patients: int, max_images_per_patient: int = 12) -> float:
    """Expected number of images for n_patients (NIH's skewed distribution, capped)."""
    probs = _images_per_patient_probabilities(max_images_per_patient)
    return n_patients * float(np.dot(np.arange(1, len(probs) + 1), probs))


def _target_prevalence(min_positives: int, n_images: int) -> np.ndarray:
    """NIH prevalence per class, raised to the floor rate for the rare ones."""
    prevalence = np.array(NIH_POSITIVES, dtype=float) / NIH_IMAGES
    return np.maximum(prevalence, min_positives / max(n_images, 1))


@functools.lru_cache(maxsize=1)
def _lift() -> np.ndarray:
    """P(j | i) / P(j): how much having finding i makes finding j more likely in NIH."""
    cooccurrence = np.array(NIH_COOCCURRENCE, dtype=float)
    positives = np.diag(cooccurrence)
    lift = cooccurrence * NIH_IMAGES / np.outer(positives, positives)
    np.fill_diagonal(lift, 0.0)  # a finding is never drawn twice
    return np.maximum(lift, 0.05)


def _sample_fresh_findings(rng: np.random.Generator, base_weights: np.ndarray,
                           count_probs: np.ndarray) -> np.ndarray:
    """One image's findings, ignoring the patient's history.

    The number of findings follows NIH's findings-per-image histogram; each next finding is
    picked with weight prevalence x product of its lifts with those already picked, so pairs
    that co-occur in NIH (Effusion + Atelectasis, Emphysema + Pneumothorax) co-occur here.
    """
    vector = np.zeros(N_LABELS, dtype=np.uint8)
    n_findings = int(rng.choice(len(count_probs), p=count_probs))
    weights = base_weights.copy()
    for _ in range(min(n_findings, N_LABELS)):
        weights = weights * (1 - vector)
        chosen = int(rng.choice(N_LABELS, p=weights / weights.sum()))
        vector[chosen] = 1
        weights = weights * _lift()[chosen]
    return vector


def _copy_probability(prevalence: np.ndarray) -> np.ndarray:
    """Per class, the chance a follow-up copies the previous image's label.

    With probability rho a follow-up keeps the previous label for a class, otherwise it takes
    a fresh draw. That leaves the prevalence unchanged and makes
    P(next | this) = rho + (1 - rho) * prevalence, which we set to NIH's persistence.
    """
    persistence = np.array(NIH_PERSISTENCE)
    return np.clip((persistence - prevalence) / (1 - prevalence), 0.0, 1.0)


def _sample_truth(rng: np.random.Generator, images_per_patient: np.ndarray,
                  prevalence: np.ndarray) -> np.ndarray:
    """Drawn findings for every image, patient after patient, follow-up after follow-up."""
    count_probs = np.array(NIH_FINDINGS_PER_IMAGE, dtype=float)
    count_probs /= count_probs.sum()
    # Picking n findings by weight ~ prevalence reproduces the prevalence when the mean number
    # of findings per image equals the sum of prevalences; scale for the floor's extra cases.
    base_weights = prevalence / prevalence.sum()
    count_probs = _rescale_count_distribution(count_probs, prevalence.sum())
    copy = _copy_probability(prevalence)
    truth = np.zeros((int(images_per_patient.sum()), N_LABELS), dtype=np.uint8)
    row = 0
    for n_images in images_per_patient:
        for follow_up in range(n_images):
            fresh = _sample_fresh_findings(rng, base_weights, count_probs)
            if follow_up:
                keep = rng.random(N_LABELS) < copy
                fresh = np.where(keep, truth[row - 1], fresh)
            truth[row] = fresh
            row += 1
    return truth


def _rescale_count_distribution(count_probs: np.ndarray, mean_wanted: float) -> np.ndarray:
    """Shift mass between 0 and >=1 findings so the mean count is mean_wanted."""
    counts = np.arange(len(count_probs))
    mean_positive = np.dot(counts, count_probs) / (1 - count_probs[0])
    p_any = min(mean_wanted / mean_positive, 0.95)
    rescaled = count_probs * (p_any / (1 - count_probs[0]))
    rescaled[0] = 1 - p_any
    return rescaled


def _enforce_floor(rng: np.random.Generator, truth: np.ndarray, min_positives: int) -> None:
    """Add a rare finding to random images until every class has min_positives (in place)."""
    for k in range(N_LABELS):
        candidates = np.flatnonzero(truth[:, k] == 0)
        missing = min(min_positives - int(truth[:, k].sum()), len(candidates))
        if missing > 0:
            truth[rng.choice(candidates, size=missing, replace=False), k] = 1


def _apply_label_noise(rng: np.random.Generator, truth: np.ndarray, noise: float) -> np.ndarray:
    """Published labels: per class, flip round(noise x positives) positives off and as many
    negatives on. Text-mined labels both miss and invent findings; balancing the two keeps the
    per-class counts (and the rare-class floor) exact."""
    labels = truth.copy()
    for k in range(N_LABELS):
        positives = np.flatnonzero(truth[:, k] == 1)
        negatives = np.flatnonzero(truth[:, k] == 0)
        n_flip = min(int(round(noise * len(positives))), len(negatives))
        if n_flip:
            labels[rng.choice(positives, size=n_flip, replace=False), k] = 0
            labels[rng.choice(negatives, size=n_flip, replace=False), k] = 1
    return labels


def _names(vector: np.ndarray) -> tuple[str, ...]:
    return tuple(LABELS[k] for k in np.flatnonzero(vector))


def plan_dataset(config: PhantomConfig) -> list[PlannedImage]:
    """Patients, follow-ups, demographics and labels of the dataset, without rendering.

    Cheap (no pixels), so tests and label-only runs can use large configs.
    """
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_PLAN]))
    probs = _images_per_patient_probabilities(config.max_images_per_patient)
    images_per_patient = rng.choice(np.arange(1, len(probs) + 1), size=config.n_patients,
                                    p=probs)
    n_images = int(images_per_patient.sum())
    prevalence = _target_prevalence(config.floor, n_images)
    truth = _sample_truth(rng, images_per_patient, prevalence)
    _enforce_floor(rng, truth, config.floor)
    noise_rng = np.random.default_rng(np.random.SeedSequence([config.seed, _STREAM_NOISE]))
    labels = _apply_label_noise(noise_rng, truth, config.label_noise)

    plan = []
    row = 0
    for patient_index, n_patient_images in enumerate(images_per_patient):
        patient_id = patient_index + 1
        gender = "M" if rng.random() < NIH_MALE_FRACTION else "F"
        age = int(np.clip(round(rng.normal(NIH_AGE_MEAN, NIH_AGE_SD)), 1, 95))
        for follow_up in range(n_patient_images):
            # Follow-ups come weeks to years apart; ages never go down.
            age = min(age + int(rng.random() < 0.3), 99)
            view = "AP" if rng.random() < config.ap_fraction else "PA"
            plan.append(PlannedImage(
                image_index=f"{patient_id:08d}_{follow_up:03d}.png",
                patient_id=patient_id, follow_up=follow_up, age=age, gender=gender, view=view,
                truth=_names(truth[row]), labels=_names(labels[row])))
            row += 1
    return plan


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
        geo.heart_ratio += 0.02 + 0.10 * s
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
        radius = site.uniform(0.008, 0.02) * (0.8 + 0.4 * s)
        nodules = np.maximum(nodules, c.disk(cx, cy, radius))
    c.density += (0.08 + 0.22 * s) * nodules
    return nodules


def _sign_pleural_thickening(c: _Canvas, anatomy: Anatomy, rng, s: float) -> np.ndarray:
    """Soft-tissue band along the lateral chest wall (or an apical cap)."""
    site = _site_rng(anatomy, "Pleural_Thickening")
    side = int(site.choice([-1, 1]))
    geo = c.geo
    depth = (1 - np.sqrt(c.lung_r2[side])) * geo.lung_half_width  # ~distance to the edge
    thickness = 0.008 + 0.022 * s
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


# --------------------------------------------------------------------------------------------
# Writing the dataset
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RenderTask:
    seed: int
    patient_id: int
    follow_up: int
    findings: tuple[str, ...]
    view: str
    size: int
    strength_range: tuple[float, float]
    path: str


def _render_and_save(task: _RenderTask) -> dict[str, tuple[float, float, float, float]]:
    anatomy = patient_anatomy(task.seed, task.patient_id)
    rng = np.random.default_rng(np.random.SeedSequence(
        [task.seed, _STREAM_IMAGE, task.patient_id, task.follow_up]))
    image, boxes = render_image(rng, task.findings, anatomy, task.size, task.view,
                                task.strength_range)
    Image.fromarray(image).save(task.path, format="PNG", compress_level=1)
    return boxes


def _render_all(tasks: list[_RenderTask], processes: int,
                progress: Callable[[str], None] | None) -> list[dict]:
    if processes > 1:
        # Threads, not processes: numpy's array maths and PIL's PNG encoder release the GIL,
        # and threads need neither fork (unsafe next to TensorFlow's threads) nor spawn
        # (which re-imports the caller's __main__). map() keeps the task order.
        with ThreadPoolExecutor(processes) as pool:
            return _collect(pool.map(_render_and_save, tasks), len(tasks), progress)
    return _collect(map(_render_and_save, tasks), len(tasks), progress)


def _collect(results: Iterable[dict], total: int,
             progress: Callable[[str], None] | None) -> list[dict]:
    collected = []
    next_report = 0.1
    for boxes in results:
        collected.append(boxes)
        if progress is not None and len(collected) >= next_report * total:
            progress(f"phantoms: {len(collected)}/{total} images ({len(collected) / total:.0%})")
            while next_report * total <= len(collected):
                next_report += 0.1
    return collected


def _write_lines(path: Path, header: str, lines: Iterable[str]) -> None:
    text = "\n".join([header, *lines]) + "\n"
    path.write_text(text, encoding="utf-8", newline="")


def _joined(names: tuple[str, ...]) -> str:
    return "|".join(names) if names else NO_FINDING


def _data_entry_rows(plan: list[PlannedImage], size: int) -> list[str]:
    spacing = f"{NIH_FIELD_OF_VIEW_MM / size:.3f}"
    return [f"{p.image_index},{_joined(p.labels)},{p.follow_up},{p.patient_id},{p.age},"
            f"{p.gender},{p.view},{size},{size},{spacing},{spacing}" for p in plan]


def _bbox_rows(plan: list[PlannedImage], boxes: list[dict]) -> list[str]:
    rows = []
    for planned, image_boxes in zip(plan, boxes, strict=True):
        for name in planned.truth:
            x, y, w, h = image_boxes[name]
            label = BBOX_SPELLING.get(name, name)
            rows.append(f"{planned.image_index},{label},{x:.1f},{y:.1f},{w:.1f},{h:.1f},,,")
    return rows


def _remove_stale_images(images_dir: Path, keep: set[str]) -> None:
    """A rerun with fewer patients must not leave the old run's PNGs behind."""
    for path in images_dir.glob("*.png"):
        if IMAGE_NAME.match(path.name) and path.name not in keep:
            path.unlink()


# NIH's official test list holds 25,596 of 112,120 images (22.8%), whole patients only.
OFFICIAL_TEST_PATIENT_FRACTION = 0.2
_STREAM_OFFICIAL = 7_001


def official_lists(plan: list[PlannedImage], seed: int) -> tuple[list[str], list[str]]:
    """(train_val, test) image names, patient-disjoint, like NIH's train_val_list.txt and
    test_list.txt, so that `split.method: official` runs on phantoms too."""
    patients = sorted({p.patient_id for p in plan})
    rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_OFFICIAL]))
    n_test = int(np.floor(OFFICIAL_TEST_PATIENT_FRACTION * len(patients) + 0.5))
    test_patients = set(rng.choice(patients, size=n_test, replace=False).tolist())
    names = sorted(plan, key=lambda p: p.image_index)
    test = [p.image_index for p in names if p.patient_id in test_patients]
    train_val = [p.image_index for p in names if p.patient_id not in test_patients]
    return train_val, test


def generate_phantoms(out_dir: str | Path, config: PhantomConfig,
                      progress: Callable[[str], None] | None = print) -> dict:
    """Write the dataset to out_dir; return a summary.

    Summary keys: out_dir, images, patients, positives (published labels per class),
    true_positives (drawn), no_finding (published), boxes, seconds.
    """
    if not isinstance(config, PhantomConfig):
        raise TypeError(f"config must be a PhantomConfig, got {type(config).__name__}")
    started = time.perf_counter()
    out = Path(out_dir)
    images_dir = out / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_dataset(config)
    _remove_stale_images(images_dir, {p.image_index for p in plan})
    if progress is not None:
        progress(f"phantoms: rendering {len(plan)} images of {config.n_patients} patients "
                 f"({config.image_size} px) -> {out}")
    strength_range = (float(config.strength_range[0]), float(config.strength_range[1]))
    tasks = [_RenderTask(config.seed, p.patient_id, p.follow_up, p.truth, p.view,
                         config.image_size, strength_range, str(images_dir / p.image_index))
             for p in plan]
    boxes = _render_all(tasks, config.processes, progress)
    # The CSVs come last: a Data_Entry file means every image it lists exists.
    _write_lines(out / "BBox_List_2017.csv", BBOX_HEADER, _bbox_rows(plan, boxes))
    _write_lines(out / "phantom_truth.csv", TRUTH_HEADER,
                 [f"{p.image_index},{_joined(p.truth)}" for p in plan])
    train_val, test = official_lists(plan, config.seed)
    (out / "train_val_list.txt").write_text("".join(f"{name}\n" for name in train_val))
    (out / "test_list.txt").write_text("".join(f"{name}\n" for name in test))
    _write_lines(out / "Data_Entry_2017.csv", DATA_ENTRY_HEADER,
                 _data_entry_rows(plan, config.image_size))
    return _summary(out, plan, config, time.perf_counter() - started)


def _summary(out: Path, plan: list[PlannedImage], config: PhantomConfig,
             seconds: float) -> dict:
    def count(attribute: str) -> dict[str, int]:
        return {name: sum(name in getattr(p, attribute) for p in plan) for name in LABELS}

    return {
        "out_dir": str(out),
        "images": len(plan),
        "patients": config.n_patients,
        "positives": count("labels"),
        "true_positives": count("truth"),
        "no_finding": sum(not p.labels for p in plan),
        "boxes": sum(len(p.truth) for p in plan),
        "seconds": round(seconds, 3),
    }


__all__ = [
    "Anatomy",
    "PhantomConfig",
    "PlannedImage",
    "SIGNS",
    "expected_images",
    "generate_phantoms",
    "official_lists",
    "patient_anatomy",
    "plan_dataset",
    "render_image",
    "sample_anatomy",
]
