"""DVC stage `ingest`: NIH Data_Entry CSV (+ image folder) -> the label table."""

import _common

from cxr.data.nih import build_label_table
from cxr.io import write_table


def main() -> None:
    parser = _common.paths(_common.parser(__doc__),
                           csv="NIH Data_Entry_2017*.csv", images="the image folder",
                           out="the label table (data/interim/labels.csv)")
    args, params = _common.start(parser)
    table = build_label_table(args.csv, args.images, check_images=params.data.check_images)
    write_table(table, args.out)
    mode = "with images" if params.data.check_images else "labels only"
    print(f"ingest ({params.data.source}, {mode}): {len(table)} images of "
          f"{table['Patient ID'].nunique()} patients -> {args.out}")


if __name__ == "__main__":
    main()
