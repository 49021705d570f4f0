"""The data stages at NIH's full size: 112,120 rows, 30,805 patients, stand-in images.

Builds a copy of the repository with `data/raw/nih/` in the download's layout (the v2020 CSV with
NIH's label prevalences, BBox_List, `images_001 ... images_012/images/*.png`) whose images are
stand-ins: the real NIH films of tests/data/films, shifted per image, at SIDE px (writing
112,120 real-size 1024 px PNGs would take over an hour here). Then runs, with
configs/nih-paper.yaml (224 px, 50% of patients), each stage up to the baseline through
`dvc repro STAGE`, timed with /usr/bin/time (wall seconds, peak resident memory of the stage's
process tree), and `dvc status` warm. Prints one table row per step, the output sizes, and the
cache's link count (a hardlinked store is on disk once), plus the decode rate of real 1024 px
films, to turn the stand-ins' prepare time into the real one.

    python benchmarks/full_size.py [--side 128] [--rows 112120] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from nih_layout import BBOX_HEADER, FILMS, FINDINGS, V2020_HEADER  # noqa: E402
from test_real_data_recipe import copy_repository  # noqa: E402

NIH_IMAGES, NIH_PATIENTS = 112_120, 30_805
STATS = json.loads((REPO / "tests/data/nih_reference_stats.json").read_text())
PER_ARCHIVE = -(-NIH_IMAGES // 12)  # twelve archives, as NIH ships them


def _plan(rows: int, patients: int, seed: int):
    """(name, labels, patient, follow-up) per row, in patient order, NIH's prevalences."""
    rng = np.random.default_rng(seed)
    extra = rng.multinomial(rows - patients, rng.dirichlet(np.full(patients, 0.3)))
    prevalence = np.array([STATS["positives"][f] / STATS["images"] for f in FINDINGS])
    plan = []
    for patient, count in enumerate(extra + 1, start=1):
        for follow_up in range(count):
            labels = [f for f, p in zip(FINDINGS, prevalence, strict=True) if rng.random() < p]
            plan.append((f"{patient:08d}_{follow_up:03d}.png", labels, patient, follow_up))
    return plan


def _write_images(job):
    root, side, start, names = job
    films = []
    for path in sorted(Path(FILMS).glob("*.png")):
        with Image.open(path) as image:
            films.append(np.asarray(image.convert("L").resize((side, side)), dtype=np.uint8))
    for offset, name in enumerate(names):
        position = start + offset
        folder = Path(root) / f"images_{position // PER_ARCHIVE + 1:03d}" / "images"
        folder.mkdir(parents=True, exist_ok=True)
        film = np.roll(films[position % len(films)], position % side, axis=1)
        Image.fromarray(film).save(folder / name, compress_level=1)
    return len(names)


def write_layout(root: Path, rows: int, side: int, seed: int = 0) -> dict:
    started = time.perf_counter()
    plan = _plan(rows, min(NIH_PATIENTS, rows), seed)
    rng = np.random.default_rng(seed + 1)
    lines, boxes = [], []
    for name, labels, patient, follow_up in plan:
        view = "PA" if rng.random() < 0.6 else "AP"
        lines.append(f"{name},{'|'.join(labels) or 'No Finding'},{follow_up},{patient},"
                     f"{int(rng.integers(1, 95))},{'MF'[int(rng.integers(2))]},{view},"
                     f"2500,2048,0.143,0.143")
        if labels and len(boxes) < 984 and rng.random() < 0.02:
            x, y, w, h = rng.uniform(100, 500, 4)
            boxes.append(f"{name},{labels[0]},{float(x)!r},{float(y)!r},{float(w)!r},"
                         f"{float(h)!r},,,")
    root.mkdir(parents=True, exist_ok=True)
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join([V2020_HEADER, *lines]) + "\n")
    (root / "BBox_List_2017.csv").write_text("\n".join([BBOX_HEADER, *boxes]) + "\n")
    names = [row[0] for row in plan]
    step = 5_000
    jobs = [(str(root), side, start, names[start:start + step])
            for start in range(0, len(names), step)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        written = sum(pool.map(_write_images, jobs))
    return {"rows": len(plan), "patients": plan[-1][2], "images": written,
            "seconds": time.perf_counter() - started}


def timed(command: list[str], cwd: Path, env: dict) -> tuple[float, float, str]:
    """(wall s, peak resident MiB, output tail) of one command's process tree."""
    done = subprocess.run(["/usr/bin/time", "-f", "TIME %e %M", *command], cwd=cwd, env=env,
                          text=True, capture_output=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n"
                         f"{done.stderr[-3000:]}")
    line = [x for x in done.stderr.splitlines() if x.startswith("TIME ")][-1].split()
    return float(line[1]), float(line[2]) / 1024, done.stdout[-300:]


def du_mib(*paths: Path) -> float:
    """Disk use of the paths together, each inode once (a hardlinked cache file and its
    workspace name count once, as on disk)."""
    seen, total = set(), 0
    for path in paths:
        for item in [path] if path.is_file() else path.rglob("*"):
            info = item.lstat()
            if item.is_file() and (info.st_dev, info.st_ino) not in seen:
                seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
    return total / 2**20


def real_decode_rate(count: int = 64) -> float:
    """Images per second that prepare's decoder + resize reaches on real 1024 px NIH films."""
    from cxr.data.prepare import read_gray, resize_gray

    film = sorted(FILMS.glob("00000013_003.png"))[0]
    started = time.perf_counter()
    for _ in range(count):
        resize_gray(read_gray(film), 224)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=128)
    parser.add_argument("--rows", type=int, default=NIH_IMAGES)
    parser.add_argument("--keep", type=Path, help="build here and keep it (default: a temp dir)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cxr-full-size-"))
    project = work / "cxr"
    if project.exists():
        shutil.rmtree(project)
    project.mkdir(parents=True)
    copy_repository(project)
    made = write_layout(project / "data/raw/nih", args.rows, args.side)
    print(f"stand-ins: {made['rows']:,} rows, {made['patients']:,} patients, "
          f"{made['images']:,} PNGs at {args.side} px in {made['seconds']:.0f} s")
    raw = yaml.safe_load((REPO / "configs/nih-paper.yaml").read_text())
    raw["prepare"]["processes"] = os.cpu_count() or 1
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc = str(Path(sys.executable).with_name("dvc"))
    rows = []
    for stage in ("ingest", "sample", "split", "prepare", "baseline"):
        seconds, peak, _ = timed([dvc, "repro", "--single-item", stage], project, env)
        rows.append((f"dvc repro {stage}", seconds, peak))
    for label in ("dvc status (warm)", "dvc status (again)"):
        seconds, peak, _ = timed([dvc, "status"], project, env)
        rows.append((label, seconds, peak))
    store = project / "data/prepared/images"
    cache = project / ".dvc/cache"
    images = store / "images.npy"
    print("\n| step | wall s | peak MiB |\n|---|---|---|")
    for label, seconds, peak in rows:
        print(f"| {label} | {seconds:.1f} | {peak:,.0f} |")
    together, apart = du_mib(store, cache), du_mib(store) + du_mib(cache)
    print(f"\nprepared store {du_mib(store):,.0f} MiB, .dvc/cache {du_mib(cache):,.0f} MiB; "
          f"both on disk {together:,.0f} MiB against {apart:,.0f} MiB if copied: ratio "
          f"{together / apart:.2f} (images.npy has {images.stat().st_nlink} links: 2 = "
          f"hardlinked into the cache)")
    split = json.loads((project / "metrics/split.json").read_text())
    print(f"split: {split['images']:,} images, {split['patients']:,} patients")
    rate = real_decode_rate()
    print(f"prepare's decode + resize of a real 1024 px NIH film on one core: {rate:.0f} img/s "
          f"(the sample's {split['images']:,} such files: ~{split['images'] / rate / 60:.0f} "
          f"core-minutes)")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
