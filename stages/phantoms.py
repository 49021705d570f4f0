"""DVC stage `phantoms`: write the synthetic NIH-layout dataset (the embedded default source)."""

import _common

from cxr.data.phantoms import PhantomConfig, generate_phantoms


def main() -> None:
    parser = _common.paths(_common.parser(__doc__),
                           out="folder for Data_Entry_2017.csv, BBox_List_2017.csv, images/")
    args, params = _common.start(parser)
    config = PhantomConfig(
        n_patients=params.phantoms.n_patients,
        image_size=params.phantoms.image_size,
        seed=params.seed,
        label_noise=params.phantoms.label_noise,
        processes=params.phantoms.processes,
    )
    summary = generate_phantoms(args.out, config)
    print(f"phantoms: {summary['images']} images of {summary['patients']} patients "
          f"in {summary['seconds']:.1f} s -> {args.out}")


if __name__ == "__main__":
    main()
