"""Patient-level sampling: take a fraction of the patients, with all of their images.

Sampling images instead would put part of a patient's follow-up series in the sample and the
rest nowhere, and would change how many images per patient the later split sees.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cxr.validation import check_fraction, check_int

PATIENT_ID = "Patient ID"


def n_patients_to_sample(fraction: float, n_patients: int) -> int:
    """``floor(fraction * n_patients + 0.5)``: round half up.

    Python's round() rounds half to even (round(2.5) == 2), which makes "half of 5 patients"
    surprising; half-up is the rounding people expect and does not depend on parity.
    """
    return math.floor(fraction * n_patients + 0.5)


def sample_patients(df: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """Rows of ``n_patients_to_sample(fraction, n)`` randomly chosen patients, in original order.

    The choice depends only on the set of patient ids, the fraction and the seed (not on row
    order), and samples are nested: with the same seed a larger fraction only adds patients,
    because both take a prefix of the same permutation of the sorted ids.
    """
    fraction = check_fraction(fraction, "fraction", include_boundaries="right",
                              type_error=ValueError)
    seed = check_int(seed, "seed", min_val=0, type_error=ValueError)
    if PATIENT_ID not in df.columns:
        raise ValueError(f"df must have a {PATIENT_ID!r} column; columns are {list(df.columns)}")
    if df.empty:
        raise ValueError("df has no rows to sample from")
    if fraction == 1.0:
        return df.copy()
    patients = np.sort(df[PATIENT_ID].unique())
    count = n_patients_to_sample(fraction, len(patients))
    if count == 0:
        raise ValueError(f"fraction={fraction!r} selects 0 of {len(patients)} patients; "
                         f"use at least {0.5 / len(patients):.3g}")
    chosen = np.random.default_rng(seed).permutation(patients)[:count]
    return df.loc[df[PATIENT_ID].isin(chosen).to_numpy()].copy()
