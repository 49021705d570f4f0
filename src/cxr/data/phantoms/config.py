"""PhantomConfig: the generator's settings, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass

from cxr.data.phantoms.plan import expected_images
from cxr.data.phantoms.reference import DEFAULT_MIN_POSITIVES, NIH_AP_FRACTION
from cxr.validation import check_fraction, check_int, check_number


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhantomConfig:
    """What to generate. Defaults: ~2,800 images of 1,000 patients, 256 px.

    Invalid values raise ValueError naming the field, the value and what is allowed.
    """

    n_patients: int = 1000
    image_size: int = 256
    seed: int = 0
    # Per class, this fraction of the drawn positives is published as negative, and as many
    # drawn negatives as positive: per-class counts stay exact, the labels get noisy.
    label_noise: float = 0.02
    # Floor on drawn positives per class, so rare classes (Hernia) have a few cases per split.
    # None: DEFAULT_MIN_POSITIVES, lowered to 2% of the expected images for small datasets.
    min_positives: int | None = None
    # Caps NIH's long tail (max 184 films); with 12 the mean is ~2.8 images per patient.
    max_images_per_patient: int = 12
    # Range of a sign's strength; low values are subtle (small, faint, thin).
    strength_range: tuple[float, float] = (0.15, 1.0)
    ap_fraction: float = NIH_AP_FRACTION
    # Parallel rendering workers (threads); the output does not depend on it.
    processes: int = 1
    # PNGs per folder, nested like the download (images_001/images/*.png, ...). NIH's archives
    # hold 4,999 (images_001), 10,000 (002-011) and 7,121 (012) images; we use one size.
    images_per_folder: int = 10_000

    def __post_init__(self) -> None:
        _int("n_patients", self.n_patients, 1)
        _int("image_size", self.image_size, 32, 4096)
        _int("seed", self.seed, 0)
        check_number(self.label_noise, "PhantomConfig.label_noise", min_val=0, max_val=0.5,
                     include_boundaries="left", type_error=ValueError)
        _int("max_images_per_patient", self.max_images_per_patient, 1)
        expected = expected_images(self.n_patients, self.max_images_per_patient)
        if self.min_positives is not None:
            _int("min_positives", self.min_positives, 0)
        if self.min_positives is not None and self.min_positives * 10 > expected:
            _fail("min_positives", self.min_positives,
                  f"at most a tenth of the ~{expected:.0f} images that n_patients="
                  f"{self.n_patients} gives (raise n_patients or lower min_positives)")
        check_fraction(self.ap_fraction, "PhantomConfig.ap_fraction", type_error=ValueError)
        low_high = self.strength_range
        if (not isinstance(low_high, tuple | list) or len(low_high) != 2
                or not all(isinstance(v, int | float) for v in low_high)
                or not 0 < low_high[0] <= low_high[1] <= 2):
            _fail("strength_range", low_high, "a pair (low, high) with 0 < low <= high <= 2")
        _int("processes", self.processes, 1)
        _int("images_per_folder", self.images_per_folder, 1)

    @property
    def floor(self) -> int:
        """The effective min_positives."""
        if self.min_positives is not None:
            return self.min_positives
        expected = expected_images(self.n_patients, self.max_images_per_patient)
        return min(DEFAULT_MIN_POSITIVES, int(0.02 * expected))


def _fail(name: str, value, allowed: str):
    raise ValueError(f"PhantomConfig.{name} must be {allowed}; got {value!r}.")


def _int(name: str, value, minimum: int, maximum: int | None = None) -> None:
    check_int(value, f"PhantomConfig.{name}", min_val=minimum, max_val=maximum,
              type_error=ValueError)
