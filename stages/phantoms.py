"""DVC stage `phantoms`: write the synthetic NIH-layout dataset (the embedded default source)."""

from cxr.data.phantoms import PhantomConfig, generate_phantoms
from cxr.params import load_params

OUT_DIR = "data/raw/phantoms"


def main() -> None:
    params = load_params()
    config = PhantomConfig(
        n_patients=params.phantoms.n_patients,
        image_size=params.phantoms.image_size,
        seed=params.seed,
        label_noise=params.phantoms.label_noise,
        processes=params.phantoms.processes,
    )
    summary = generate_phantoms(OUT_DIR, config)
    print(f"phantoms: {summary['images']} images of {summary['patients']} patients "
          f"in {summary['seconds']:.1f} s -> {OUT_DIR}")


if __name__ == "__main__":
    main()
