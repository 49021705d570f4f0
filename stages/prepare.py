"""DVC stage `prepare`: decode and resize every image of the sample once into a uint8 gray store.

Usage: python stages/prepare.py --sample CSV --out DIR --metrics JSON
Reads the sample table's `Image Index` and `path` columns and writes DIR/images.npy,
DIR/index.csv and DIR/store.json at pipeline.image_size (`cxr.data.prepare.prepare_store`:
atomic, byte-identical whatever prepare.processes), and the prepare metrics: the files' sizes
and how many were upsampled (`cxr.data.prepare.store_summary`; the report reads them). Train,
evaluate, localize and the baseline read the store, never the image folder.
"""

import _common

from cxr.data.prepare import open_store, prepare_store, store_summary
from cxr.io import read_table, write_json
from cxr.progress import printer


def main() -> None:
    parser = _common.paths(_common.parser(__doc__), sample="the sample table",
                           out="the store directory to write",
                           metrics="the prepare metrics (JSON)")
    args, params = _common.start(parser)
    table = read_table(args.sample)
    missing = [c for c in ("Image Index", "path") if c not in table.columns]
    if missing:
        raise SystemExit(f"{args.sample}: no column {missing[0]!r}; expected the ingest table's "
                         f"columns (Image Index, ..., path)")
    no_path = table.index[table["path"] == ""]
    if len(no_path):
        raise SystemExit(f"{args.sample}, row {int(no_path[0]) + 2}: image "
                         f"{table.loc[no_path[0], 'Image Index']!r} has no path (ingest ran "
                         f"with data.check_images: false?); the prepare stage needs the images")
    info = prepare_store(table["path"], table["Image Index"], params.pipeline.image_size,
                         args.out, processes=params.prepare.processes, progress=printer)
    summary = store_summary(open_store(args.out).index, info["image_size"])
    write_json(summary, args.metrics)
    print(f"prepare: {info['count']} images at {info['image_size']} px in "
          f"{info['seconds']:.1f} s -> {args.out}")
    if summary["upsampled"]:
        print(f"prepare: note: {summary['upsampled']} of {summary['images']} files are smaller "
              f"than {info['image_size']} px (smallest side {summary['source_side_min']} px) "
              f"and were upsampled: they carry no detail finer than their own size")


if __name__ == "__main__":
    main()
