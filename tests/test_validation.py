"""cxr.validation: the scalar checks every module uses (name, given value, what is allowed)."""

import numpy as np
import pytest

from cxr.validation import check_bool, check_fraction, check_int, check_number, check_scalar


def test_values_pass_and_come_back_as_plain_python():
    assert check_int(np.int64(3), "n", min_val=1) == 3 and type(check_int(3, "n")) is int
    assert check_number(1, "x") == 1.0 and type(check_number(np.float32(0.5), "x")) is float
    assert check_fraction(0.0, "f") == 0.0 and check_fraction(1, "f") == 1.0
    assert check_bool(np.bool_(True), "flag") is True


@pytest.mark.parametrize(("call", "error", "message"), [
    (lambda: check_int(True, "seed", min_val=0), TypeError, r"seed must be an int >= 0; got True\."),
    (lambda: check_int(2.0, "passes", min_val=1), TypeError, r"passes must be an int >= 1; got 2\.0"),
    (lambda: check_int(0, "passes", min_val=1), ValueError, r"passes must be an int >= 1; got 0\."),
    (lambda: check_int(5, "k", min_val=1, max_val=4), ValueError, r"k must be an int in \[1, 4\]"),
    (lambda: check_number(float("nan"), "t", min_val=0), ValueError, r"t must be a number >= 0"),
    (lambda: check_number("1", "t"), TypeError, r"t must be a number; got '1'"),
    (lambda: check_fraction(0, "fraction", include_boundaries="right"), ValueError,
     r"fraction must be a number in \(0, 1\]; got 0\."),
    (lambda: check_fraction(1.0, "val", include_boundaries="left"), ValueError,
     r"val must be a number in \[0, 1\); got 1\.0"),
    (lambda: check_fraction(0.5, "x", include_boundaries="sideways"), ValueError,
     "include_boundaries must be one of"),
    (lambda: check_number(0, "rate", min_val=0, include_boundaries="neither"), ValueError,
     r"rate must be a number > 0"),
    (lambda: check_bool(1, "freeze"), TypeError, r"freeze must be a bool; got 1\."),
    (lambda: check_scalar(1, "x", "complex"), ValueError, "target_type must be one of"),
])
def test_failures_name_the_argument_the_value_and_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_type_error_can_be_a_value_error_for_modules_whose_contract_says_so():
    with pytest.raises(ValueError, match="seed must be an int >= 0; got 'a'"):
        check_int("a", "seed", min_val=0, type_error=ValueError)
