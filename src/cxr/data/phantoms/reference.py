"""NIH ChestX-ray14 statistics and file formats the phantoms imitate (constants only).

The numbers are copied from the real Data_Entry_2017_v2020.csv so the generator never needs
the NIH files at run time. Per-class tuples follow cxr.labels.LABELS.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------------------------
# NIH statistics (Data_Entry_2017_v2020.csv: 112,120 images, 30,805 patients), copied here so
# the generator never needs the NIH files at run time. Order of per-class tuples: cxr.labels.LABELS.
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
# Film sizes and pixel spacing (the OriginalImage columns): cxr.data.phantoms.film.

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
_STREAM_FILM = 4  # film sizes and pixel spacing (film.py), added later: moved nothing else
