"""DVC stage `split`: train/val/test without patient leakage -> split.csv + metrics/split.json."""

import pandas as pd

from cxr.data import splitting
from cxr.data.nih import read_image_list
from cxr.io import write_json, write_table
from cxr.params import load_params

IN, OUT, METRICS = "data/interim/sample.csv", "data/processed/split.csv", "metrics/split.json"


def main() -> None:
    params = load_params()
    table = pd.read_csv(IN, dtype={"path": str}, keep_default_na=False)
    fractions = params.split.fractions.as_tuple()
    if params.split.method == "official":
        split = splitting.split_official(
            table,
            read_image_list(params.split.official_train_val_list),
            read_image_list(params.split.official_test_list),
            val_fraction=fractions[1] / (fractions[0] + fractions[1]),
            seed=params.seed,
        )
    elif params.split.by_patient and params.split.stratifier == "iterstrat":
        split = splitting.split_by_patient_iterstrat(table, fractions, params.seed)
    elif params.split.by_patient:
        split = splitting.split_by_patient(table, fractions, params.seed)
    else:
        print("split: WARNING split.by_patient is false: image-level split, patients leak "
              "between train and test (for comparison only)")
        split = splitting.split_by_image(table, fractions, params.seed)
    table = table.assign(split=split)
    write_table(table, OUT)
    summary = splitting.split_summary(table, table["split"], seed=params.seed, fractions=fractions)
    write_json(summary, METRICS)
    counts = table["split"].value_counts()
    print(f"split ({params.split.method}, by_patient={params.split.by_patient}): "
          + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("train", "val", "test"))
          + f" images -> {OUT}")


if __name__ == "__main__":
    main()
