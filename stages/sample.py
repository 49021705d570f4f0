"""DVC stage `sample`: keep a seeded fraction of the patients (all their images)."""

import _common

from cxr.data.sampling import sample_patients
from cxr.io import read_table, write_table


def main() -> None:
    parser = _common.paths(_common.parser(__doc__), labels="the label table",
                           out="the sampled table")
    args, params = _common.start(parser)
    table = read_table(args.labels)
    sample = sample_patients(table, params.sample.patient_fraction, params.seed)
    write_table(sample, args.out)
    print(f"sample: {sample['Patient ID'].nunique()} of {table['Patient ID'].nunique()} patients, "
          f"{len(sample)} images -> {args.out}")


if __name__ == "__main__":
    main()
