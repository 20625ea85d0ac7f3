"""Singapore identifier validation: NRIC/FIN check letters, phone numbers and postal codes."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trustmesh.privacy.identifiers import (
    canonical_nric,
    is_valid_nric,
    is_valid_postal_code,
    is_valid_sg_phone,
    nric_check_letter,
)

VALID = ["S1234567D", "T1234567J", "F1234567N", "G1234567X", "M1234567K", "M0000008J", "F0000004M"]
INVALID = ["S1234567A", "M1234567X"]

prefixes = st.sampled_from("STFGM")
digits = st.text(alphabet="0123456789", min_size=7, max_size=7)


@pytest.mark.parametrize("value", VALID)
def test_known_valid_nrics(value: str) -> None:
    assert is_valid_nric(value)
    assert nric_check_letter(value[0], value[1:8]) == value[8]


@pytest.mark.parametrize("value", INVALID)
def test_known_invalid_nrics(value: str) -> None:
    assert not is_valid_nric(value)
    with pytest.raises(ValueError, match="check letter"):
        canonical_nric(value)


@pytest.mark.parametrize("value", ["s1234567d", " S 1234567 D ", "t1234567j\n"])
def test_nric_case_and_spaces_are_ignored(value: str) -> None:
    assert is_valid_nric(value)
    assert canonical_nric(value) == value.upper().replace(" ", "").strip()


@pytest.mark.parametrize(
    "value", ["", "S123456D", "S12345678D", "A1234567D", "S123456AD", "S\uff11234567D", "S1234567"]
)
def test_malformed_nrics(value: str) -> None:
    assert not is_valid_nric(value)
    with pytest.raises(ValueError, match="not an NRIC/FIN"):
        canonical_nric(value)


def test_check_letter_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="prefix"):
        nric_check_letter("X", "1234567")
    with pytest.raises(ValueError, match="7 digits"):
        nric_check_letter("S", "123456")


@given(prefixes, digits)
def test_generated_check_letter_validates(prefix: str, body: str) -> None:
    value = prefix + body + nric_check_letter(prefix, body)
    assert is_valid_nric(value)
    assert canonical_nric(value.lower()) == value


@given(prefixes, digits, st.sampled_from(string.ascii_uppercase))
def test_any_other_letter_is_rejected(prefix: str, body: str, letter: str) -> None:
    expected = nric_check_letter(prefix, body)
    assert is_valid_nric(prefix + body + letter) == (letter == expected)


@pytest.mark.parametrize(
    "value", ["+65 9123 4567", "+6591234567", "91234567", "8123 4567", "6123 4567", "+65 3123 4567"]
)
def test_valid_sg_phones(value: str) -> None:
    assert is_valid_sg_phone(value)


@pytest.mark.parametrize(
    "value",
    [
        "+65 1234 5678",
        "+65 7123 4567",
        "9123 456",
        "+65 9123 45678",
        "+66 9123 4567",
        "6591234567",
        "",
        "9123-4567",
    ],
)
def test_invalid_sg_phones(value: str) -> None:
    assert not is_valid_sg_phone(value)


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("018956", True),
        (" 520123 ", True),
        ("18956", False),
        ("0189567", False),
        ("01895A", False),
        ("", False),
    ],
)
def test_postal_codes(value: str, valid: bool) -> None:
    assert is_valid_postal_code(value) is valid
