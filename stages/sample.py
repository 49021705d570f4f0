"""DVC stage `sample`: keep a seeded fraction of the patients (all their images)."""

import pandas as pd

from cxr.data.sampling import sample_patients
from cxr.io import write_table
from cxr.params import load_params

IN, OUT = "data/interim/labels.csv", "data/interim/sample.csv"


def main() -> None:
    params = load_params()
    table = pd.read_csv(IN, dtype={"path": str}, keep_default_na=False)
    sample = sample_patients(table, params.sample.patient_fraction, params.seed)
    write_table(sample, OUT)
    print(f"sample: {sample['Patient ID'].nunique()} of {table['Patient ID'].nunique()} patients, "
          f"{len(sample)} images -> {OUT}")


if __name__ == "__main__":
    main()
