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


def credit_code_valid(code: str) -> bool:
    """GB 32100-2015 check character. Invalid codes are flagged, never dropped."""
    try:
        uscc.validate(code)
    except ValidationError:
        return False
    return True
