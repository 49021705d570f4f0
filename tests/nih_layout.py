"""A folder in the NIH ChestX-ray14 download's layout, built from real films, for tests and
benchmarks: ``Data_Entry_2017_v2020.csv`` (its header and field layout), ``BBox_List_2017.csv``
(its header with three trailing empty columns, float coordinates in the 1024 px frame, the
"Infiltrate" spelling) and ``images_NNN/images/*.png`` at the sizes and modes users hold
(1024, 512 and 64 px; gray, RGB, RGBA).

Images are the real NIH films in ``tests/data/films`` (flipped and shifted per image, so no two
rows share pixels), resized; labels are drawn at a fixed prevalence per finding, so that a few
hundred images give every finding positives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

FILMS = Path(__file__).parent / "data" / "films"
V2020_HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,"
                "View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
FINDINGS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema",
            "Fibrosis", "Hernia", "Infiltration", "Mass", "Nodule", "Pleural_Thickening",
            "Pneumonia", "Pneumothorax")
BOXED = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
         "Pneumonia", "Pneumothorax")  # the eight findings NIH drew boxes for
IMAGES_PER_ARCHIVE = 10_000  # NIH's archives hold ~10,000 images each


@dataclass(frozen=True)
class Layout:
    root: Path
    csv: Path
    bbox_csv: Path
    images: int
    patients: int
    boxes: int


def _films() -> list[np.ndarray]:
    films = []
    for path in sorted(FILMS.glob("*.png")):
        with Image.open(path) as image:
            films.append(np.asarray(image.convert("L").resize((1024, 1024)), dtype=np.uint8))
    return films


def write_nih_layout(root: Path, patients: int, seed: int = 0, prevalence: float = 0.15,
                     sizes: tuple[tuple[int, float], ...] = ((64, 0.9), (512, 0.08), (1024, 0.02)),
                     modes: tuple[str, ...] = ("L", "RGB", "RGBA"),
                     box_share: float = 0.5) -> Layout:
    """Write ``patients`` patients (1-3 images each, in patient order like NIH's CSV) under
    ``root``. ``sizes``: (side, share of images); ``box_share``: the share of images with a
    boxed finding that get a box row."""
    rng = np.random.default_rng(seed)
    films = _films()
    sides = np.array([side for side, _ in sizes])
    shares = np.array([share for _, share in sizes], dtype=float)
    rows, boxes, position = [], [], 0
    for patient in range(1, patients + 1):
        for follow_up in range(int(rng.integers(1, 4))):
            name = f"{patient:08d}_{follow_up:03d}.png"
            labels = [f for f in FINDINGS if rng.random() < prevalence]
            side = int(rng.choice(sides, p=shares / shares.sum()))
            mode = modes[position % len(modes)]
            folder = root / f"images_{position // IMAGES_PER_ARCHIVE + 1:03d}" / "images"
            folder.mkdir(parents=True, exist_ok=True)
            film = films[position % len(films)]
            film = np.roll(film[:, ::-1] if position % 2 else film,
                           int(rng.integers(-40, 40)), axis=1)
            image = Image.fromarray(film).resize((side, side), Image.Resampling.BILINEAR)
            image.convert(mode).save(folder / name)
            age, sex = int(rng.integers(1, 95)), "MF"[int(rng.integers(2))]
            view = "PA" if rng.random() < 0.6 else "AP"
            rows.append(f"{name},{'|'.join(labels) or 'No Finding'},{follow_up},{patient},"
                        f"{age},{sex},{view},2500,2048,0.143,0.143")
            boxed = [f for f in labels if f in BOXED]
            if boxed and rng.random() < box_share:
                finding = boxed[int(rng.integers(len(boxed)))]
                x, y = rng.uniform(100, 600, size=2)
                w, h = rng.uniform(80, 400, size=2)
                spelled = "Infiltrate" if finding == "Infiltration" else finding
                boxes.append(f"{name},{spelled},{float(x)!r},{float(y)!r},{float(w)!r},"
                             f"{float(h)!r},,,")
            position += 1
    csv = root / "Data_Entry_2017_v2020.csv"
    csv.write_text("\n".join([V2020_HEADER, *rows]) + "\n")
    bbox_csv = root / "BBox_List_2017.csv"
    bbox_csv.write_text("\n".join([BBOX_HEADER, *boxes]) + "\n")
    return Layout(root, csv, bbox_csv, len(rows), patients, len(boxes))
