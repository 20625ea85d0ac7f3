"""Validate and canonicalise Singapore personal identifiers (NRIC/FIN, phone, postal code)."""

from __future__ import annotations

import re

NRIC_WEIGHTS = (2, 7, 6, 5, 4, 3, 2)
NRIC_OFFSETS = {"S": 0, "T": 4, "F": 0, "G": 4, "M": 3}
_CHECK_TABLES = {
    "S": "JZIHGFEDCBA",
    "T": "JZIHGFEDCBA",
    "F": "XWUTRQPNMLK",
    "G": "XWUTRQPNMLK",
    "M": "XWUTRQPNJLK",
}
_NRIC_SHAPE = re.compile(r"[STFGM][0-9]{7}[A-Z]")
_SG_PHONE = re.compile(r"(?:\+65)?[3689][0-9]{7}")
_POSTAL_CODE = re.compile(r"[0-9]{6}")


def nric_check_letter(prefix: str, digits: str) -> str:
    """The check letter of an NRIC/FIN, so identifiers can be generated and verified.

    >>> nric_check_letter("S", "1234567")
    'D'
    """
    prefix = prefix.upper()
    if prefix not in NRIC_OFFSETS:
        raise ValueError(f"NRIC/FIN prefix {prefix!r} is not one of S, T, F, G, M")
    if len(digits) != 7 or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"NRIC/FIN digits {digits!r} must be exactly 7 digits 0-9")
    total = NRIC_OFFSETS[prefix] + sum(w * int(d) for w, d in zip(NRIC_WEIGHTS, digits, strict=True))
    return _CHECK_TABLES[prefix][total % 11]


def _compact(value: str) -> str:
    """Upper-case and drop all whitespace, the form identifiers are compared in."""
    return "".join(value.split()).upper()


def is_valid_nric(value: str) -> bool:
    """True when value is a well-formed NRIC/FIN with the right check letter (case and spaces ignored).

    >>> is_valid_nric("s1234567d"), is_valid_nric("S1234567A")
    (True, False)
    """
    if not isinstance(value, str):
        return False
    compact = _compact(value)
    if not _NRIC_SHAPE.fullmatch(compact):
        return False
    return nric_check_letter(compact[0], compact[1:8]) == compact[8]


def canonical_nric(value: str) -> str:
    """The canonical form (upper case, no spaces) of a valid NRIC/FIN, the input to keyed tokens.

    >>> canonical_nric(" t1234567j ")
    'T1234567J'
    """
    if not isinstance(value, str):
        raise ValueError(f"NRIC/FIN must be a string, got {type(value).__name__}")
    compact = _compact(value)
    if not _NRIC_SHAPE.fullmatch(compact):
        raise ValueError(
            f"{value!r} is not an NRIC/FIN: expected a prefix S, T, F, G or M, 7 digits and a check letter, "
            "e.g. S1234567D"
        )
    expected = nric_check_letter(compact[0], compact[1:8])
    if compact[8] != expected:
        raise ValueError(
            f"{value!r} has check letter {compact[8]!r} but its digits need {expected!r}; "
            "check the identifier for a typing error"
        )
    return compact


def is_valid_sg_phone(value: str) -> bool:
    """True for a Singapore number: optional +65, then 8 digits starting 3, 6, 8 or 9 (spaces ignored).

    >>> is_valid_sg_phone("+65 9123 4567"), is_valid_sg_phone("1234 5678")
    (True, False)
    """
    if not isinstance(value, str):
        return False
    return bool(_SG_PHONE.fullmatch("".join(value.split())))


def is_valid_postal_code(value: str) -> bool:
    """True for a Singapore postal code: exactly 6 digits.

    >>> is_valid_postal_code("018956"), is_valid_postal_code("18956")
    (True, False)
    """
    if not isinstance(value, str):
        return False
    return bool(_POSTAL_CODE.fullmatch(value.strip()))
