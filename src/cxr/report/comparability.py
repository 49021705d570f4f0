"""Can this run's numbers be set beside the published study's? Decided from what ran.

The study trained on real NIH ChestX-ray14 (a 50% patient sample, ~56,000 images) at 224 px
from ImageNet weights for 25 epochs. A run on NIH's files that differs in any of these is a
real-data run, not a reproduction: its report says which conditions it missed instead of
inviting a comparison. The study's split is image-level (patients shared between its splits),
so even a run that meets every condition is set beside it with that caveat.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

# What the study ran (its Table 1 and text); a run must match to be set beside it.
STUDY_SOURCE = "nih"
STUDY_MIN_IMAGES = 50_000      # its 50% patient sample holds ~56,000 of 112,120 images
STUDY_IMAGE_SIZE = 224
STUDY_EPOCHS = 25


def _weights_are_imagenet(weights: str) -> bool:
    # "imagenet", or a folder of Keras' ImageNet no-top files (offline ImageNet); a single
    # weights file may hold anything, so it is not taken for ImageNet.
    return weights == "imagenet" or (weights not in ("", "none") and Path(weights).is_dir())


def study_comparability(source: str, images: int | None, image_size: int, weights: str,
                        planned_epochs: Mapping[str, int], upsampled: int | None) -> dict:
    """``{"comparable": bool, "checks": [{what, this_run, study, met}, ...]}``.

    Args:
        source: ``data.source``.
        images: images in the split (all three parts).
        image_size: the side the models saw (``pipeline.image_size``).
        weights: ``train.weights``.
        planned_epochs: model name -> head + fine-tune epochs of its schedule.
        upsampled: files prepare enlarged to ``image_size`` (None: not recorded).
    """
    short = sorted(name for name, epochs in planned_epochs.items() if epochs < STUDY_EPOCHS)
    checks = [
        {"what": "data", "this_run": source, "study": "real NIH ChestX-ray14",
         "met": source == STUDY_SOURCE},
        {"what": "images", "this_run": images, "study": f"at least {STUDY_MIN_IMAGES:,}",
         "met": images is not None and images >= STUDY_MIN_IMAGES},
        {"what": "image size", "this_run": f"{image_size} px", "study": f"{STUDY_IMAGE_SIZE} px",
         "met": image_size == STUDY_IMAGE_SIZE},
        {"what": "files at that size", "this_run":
            "not recorded" if upsampled is None else f"{upsampled} upsampled",
         "study": "none upsampled", "met": upsampled == 0},
        {"what": "initial weights", "this_run": weights, "study": "ImageNet",
         "met": _weights_are_imagenet(weights)},
        {"what": "epochs", "this_run": ", ".join(f"{name} {planned_epochs[name]}"
                                                 for name in planned_epochs),
         "study": f"{STUDY_EPOCHS} for every model", "met": not short},
    ]
    return {"comparable": all(check["met"] for check in checks), "checks": checks}


def unmet(comparability: Mapping | None) -> list[str]:
    """``"image size 64 px (study: 224 px)"`` for each condition the run missed."""
    if not isinstance(comparability, Mapping):
        return []
    return [f"{check['what']} {check['this_run']} (study: {check['study']})"
            for check in comparability.get("checks", []) if not check.get("met")]
