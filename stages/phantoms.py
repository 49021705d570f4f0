"""DVC stage `phantoms`: write the synthetic NIH-layout dataset (the embedded default source).

With `data.source: nih` the generator does not run: the folder gets only a note saying why, so
a plain `dvc repro` on the real data costs nothing here.
"""

import _common

from cxr.data.phantoms import PhantomConfig, generate_phantoms
from cxr.progress import printer


def main() -> None:
    parser = _common.paths(_common.parser(__doc__),
                           out="folder for Data_Entry_2017.csv, BBox_List_2017.csv, images/")
    args, params = _common.start(parser)
    if params.data.source != "phantoms":
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "NOT_GENERATED.txt").write_text(
            f"data.source is {params.data.source!r}: no phantoms were generated.\n")
        print(f"phantoms: skipped (data.source is {params.data.source!r})")
        return
    config = PhantomConfig(
        n_patients=params.phantoms.n_patients,
        image_size=params.phantoms.image_size,
        seed=params.seed,
        label_noise=params.phantoms.label_noise,
        strength_range=(params.phantoms.strength_min, params.phantoms.strength_max),
        processes=params.phantoms.processes,
    )
    summary = generate_phantoms(args.out, config, progress=printer)
    print(f"phantoms: {summary['images']} images of {summary['patients']} patients "
          f"in {summary['seconds']:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
