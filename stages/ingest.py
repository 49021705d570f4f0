"""DVC stage `ingest`: NIH Data_Entry CSV (+ image folder) -> data/interim/labels.csv."""

from cxr.data.nih import build_label_table
from cxr.io import write_table
from cxr.params import load_params

OUT = "data/interim/labels.csv"


def main() -> None:
    params = load_params()
    table = build_label_table(params.data.csv, params.data.images_dir,
                              check_images=params.data.check_images)
    write_table(table, OUT)
    mode = "with images" if params.data.check_images else "labels only"
    print(f"ingest ({params.data.source}, {mode}): {len(table)} images of "
          f"{table['Patient ID'].nunique()} patients -> {OUT}")


if __name__ == "__main__":
    main()
