"""DVC stage `prepare`: decode and resize every image of a table once into a uint8 gray store.

Usage: python stages/prepare.py (--sample CSV | --split CSV) --out DIR
Reads the table's `Image Index` and `path` columns (data/interim/sample.csv or
data/processed/split.csv), writes DIR/images.npy, DIR/index.csv and DIR/store.json
(`cxr.data.prepare.prepare_store`: atomic, byte-identical whatever prepare.processes) at
pipeline.image_size. Train, evaluate and localize then read it with `open_store`.
"""

import argparse

import pandas as pd

from cxr.data.prepare import prepare_store
from cxr.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    table_arg = parser.add_mutually_exclusive_group(required=True)
    table_arg.add_argument("--sample", help="the sample table (data/interim/sample.csv)")
    table_arg.add_argument("--split", help="the split table (data/processed/split.csv)")
    parser.add_argument("--out", required=True, help="the store directory to write")
    args = parser.parse_args()
    params = load_params()
    source = args.sample or args.split
    table = pd.read_csv(source, dtype={"Image Index": str, "path": str}, keep_default_na=False)
    missing = [c for c in ("Image Index", "path") if c not in table.columns]
    if missing:
        raise SystemExit(f"{source}: no column {missing[0]!r}; expected the ingest table's "
                         f"columns (Image Index, ..., path)")
    no_path = table.index[table["path"] == ""]
    if len(no_path):
        raise SystemExit(f"{source}, row {int(no_path[0]) + 2}: image "
                         f"{table.loc[no_path[0], 'Image Index']!r} has no path (ingest ran "
                         f"with data.check_images: false?); the prepare stage needs the images")
    info = prepare_store(table["path"], table["Image Index"], params.pipeline.image_size,
                         args.out, processes=params.prepare.processes)
    print(f"prepare: {info['count']} images at {info['image_size']} px in "
          f"{info['seconds']:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
