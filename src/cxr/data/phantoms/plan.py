"""The plan: who has which images and which findings (labels, demographics; no pixels)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from cxr.data.phantoms.reference import (
    _STREAM_NOISE,
    _STREAM_PLAN,
    NIH_AGE_MEAN,
    NIH_AGE_SD,
    NIH_COOCCURRENCE,
    NIH_FINDINGS_PER_IMAGE,
    NIH_IMAGES,
    NIH_IMAGES_PER_PATIENT,
    NIH_MALE_FRACTION,
    NIH_PERSISTENCE,
    NIH_POSITIVES,
)
from cxr.labels import LABELS, N_LABELS

if TYPE_CHECKING:  # config imports expected_images from here
    from cxr.data.phantoms.config import PhantomConfig


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
