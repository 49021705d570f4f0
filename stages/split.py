"""DVC stage `split`: train/val/test without patient leakage -> split.csv + metrics/split.json."""

import _common

from cxr.data import splitting
from cxr.data.nih import read_image_list
from cxr.io import read_table, write_json, write_table


def main() -> None:
    parser = _common.paths(
        _common.parser(__doc__), sample="the sampled table", out="the split table",
        metrics="the split summary (JSON)",
        train_val_list="NIH train_val_list.txt (read when split.method is official)",
        test_list="NIH test_list.txt (read when split.method is official)")
    args, params = _common.start(parser)
    table = read_table(args.sample)
    fractions = params.split.fractions.as_tuple()
    if params.split.method == "official":
        for option, path in (("official_train_val_list", args.train_val_list),
                             ("official_test_list", args.test_list)):
            if path.stat().st_size == 0:
                raise SystemExit(f"split.method is official but split.{option} is {path}, an "
                                 f"empty file (the placeholder for method: iterative); point it "
                                 f"at NIH's list")
        split = splitting.split_official(
            table,
            read_image_list(args.train_val_list),
            read_image_list(args.test_list),
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
    write_table(table, args.out)
    summary = splitting.split_summary(table, table["split"], seed=params.seed, fractions=fractions)
    write_json(summary, args.metrics)
    counts = table["split"].value_counts()
    print(f"split ({params.split.method}, by_patient={params.split.by_patient}): "
          + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("train", "val", "test"))
          + f" images -> {args.out}")


if __name__ == "__main__":
    main()
