"""How a rejected file's problems are listed, the same for every import (zones, permits, …).

A file is rejected whole when anything in it is wrong, and the user should see every problem
at once rather than fix them one run at a time; but a 10,000-line file with the wrong column
order must not print 10,000 lines, so the list is cut after the first few.
"""

from __future__ import annotations

MAX_REPORTED = 20


def problem_list(errors: list[str], source: str = "") -> tuple[str, str]:
    """("<source>: " or "", the first MAX_REPORTED problems, one per indented line)."""
    shown = errors[:MAX_REPORTED]
    more = len(errors) - len(shown)
    text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
    return (f"{source}: " if source else ""), text
