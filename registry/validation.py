"""Checks on registry fields: unified social credit codes and plates."""

from __future__ import annotations

import re

from stdnum.cn import uscc
from stdnum.exceptions import ValidationError

# Province abbreviations used on Chinese plates.
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
# A province character, a letter, then 5 characters (6 for new-energy plates); letters I and
# O are not used. Trailers end in 挂.
PLATE = re.compile(rf"^[{PROVINCES}][A-HJ-NP-Z][A-HJ-NP-Z0-9]{{4,5}}[A-HJ-NP-Z0-9挂学警]$")


def normalise_plate(plate: str) -> str:
    return plate.strip().upper().replace(" ", "").replace("·", "").replace("-", "")


def plate_problem(plate: str) -> str | None:
    """None when the plate looks like a real Chinese plate, else what is wrong."""
    if not PLATE.match(normalise_plate(plate)):
        return (
            f"malformed plate {plate!r}: expected e.g. 粤B12345 (province, letter, 5-6 characters)"
        )
    return None


# GB 32100-2015 alphabet and length. A code outside it is a typo and is refused; a code in it
# whose check character fails is stored and flagged (real registries hold such codes).
CREDIT_CODE_FORMAT = re.compile(r"^[0-9A-HJ-NPQRTUWXY]{18}$")
# Device ids as the MQTT contract allows them in a topic (telemetry.contract.DEVICE_ID).
DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def credit_code_problem(code: str) -> str | None:
    """None when the code has the form of a GB 32100 code (the check character aside)."""
    if not CREDIT_CODE_FORMAT.match(code):
        return (
            f"malformed credit code {code!r}: expected 18 characters of 0-9 and A-Z without "
            "I, O, S, V, Z (GB 32100-2015)"
        )
    return None


def credit_code_valid(code: str) -> bool:
    """GB 32100-2015 check character. Invalid codes are flagged, never dropped."""
    try:
        uscc.validate(code)
    except ValidationError:
        return False
    return True
