"""Synthetic chest X-ray "phantoms" written in the exact NIH ChestX-ray14 layout.

The pipeline has to run end to end, and its tests have to mean something, on a machine without
the 45 GB NIH download. This module writes a small dataset that the real NIH reader reads
unchanged, with the statistical shape of the real one (label prevalence, co-occurrence,
findings per image, images per patient, persistence across follow-ups, views, sex, age) and a
drawn radiographic sign for each of the 14 findings.

Files written under ``out_dir``:

* ``Data_Entry_2017.csv``: the NIH v2020 columns. ``Finding Labels`` are the *published*
  labels: the drawn truth with ``label_noise`` applied (NIH labels were text-mined from
  reports, so they are noisy too). Rows are in patient order, as NIH's.
  ``OriginalImage[Width,Height]`` and ``OriginalImagePixelSpacing[x,y]`` are drawn like NIH's
  (the scanned film's size, 2500 x 2048 and so on; ``film.py``), never the PNG's size: code
  must take image sizes from the image files, as it must on the real data.
* ``BBox_List_2017.csv``: the NIH box file's format and quirks (``Bbox [x,y,w,h]`` split over
  four fields, three trailing empty fields, ``Infiltrate`` for Infiltration), with one box for
  every *drawn* finding (truth, not the noisy labels). Boxes are in PNG pixels.
* ``images_001/images/PPPPPPPP_FFF.png``, ``images_002/images/...``: nested like the download,
  ``images_per_folder`` files a folder in name order; 8-bit grayscale, ``image_size`` square.
  Point ``data.images_dir`` at ``out_dir`` itself (``cxr.data.nih.find_images`` walks it).
* ``phantom_truth.csv`` (not an NIH file; the NIH reader never opens it): ``Image Index`` and
  the drawn ``Finding Labels`` without label noise, for tests and Grad-CAM checks.

Everything is deterministic: the plan (labels, demographics) comes from one seeded stream, and
each image from its own stream seeded by (seed, patient, follow-up), so the files are
byte-identical whatever the number of rendering workers.
"""

from cxr.data.phantoms.anatomy import Anatomy, patient_anatomy, sample_anatomy
from cxr.data.phantoms.config import PhantomConfig
from cxr.data.phantoms.plan import PlannedImage, expected_images, plan_dataset
from cxr.data.phantoms.reference import BBOX_HEADER, DATA_ENTRY_HEADER, TRUTH_HEADER
from cxr.data.phantoms.render import render_image
from cxr.data.phantoms.signs import SIGNS
from cxr.data.phantoms.writer import generate_phantoms, official_lists

__all__ = [
    "BBOX_HEADER",
    "DATA_ENTRY_HEADER",
    "SIGNS",
    "TRUTH_HEADER",
    "Anatomy",
    "PhantomConfig",
    "PlannedImage",
    "expected_images",
    "generate_phantoms",
    "official_lists",
    "patient_anatomy",
    "plan_dataset",
    "render_image",
    "sample_anatomy",
]
