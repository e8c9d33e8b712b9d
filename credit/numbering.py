"""Case numbers and decision document numbers from the city's patterns, unique per year.

A pattern is a Python format string over `authority_short`, `year` and `seq` (the yearly
sequence, from 1), e.g. ``{authority_short}立〔{year}〕{seq:04d}号``. The sequence lives in
`credit_case_numbers` and is taken in the caller's transaction (`UPDATE … RETURNING` locks
the row): concurrent cases queue for it, and a case that rolls back gives its number back.
"""

from __future__ import annotations

import string
from typing import Any

from core.config import ConfigError

FIELDS = frozenset({"authority_short", "year", "seq"})
SERIES = {"case": "case_number_pattern", "decision": "decision_number_pattern"}


def check_pattern(pattern: str, key: str) -> None:
    """A usable pattern names only FIELDS and holds both {year} and {seq} (else two years'
    cases would collide); ConfigError names the key."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(pattern) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"cases.{key}: {exc} in {pattern!r}") from None
    unknown = names - FIELDS
    if unknown:
        raise ConfigError(
            f"cases.{key}: unknown field {{{sorted(unknown)[0]}}} in {pattern!r}; "
            f"use {{authority_short}}, {{year}} and {{seq}}"
        )
    if not {"year", "seq"} <= names:
        raise ConfigError(f"cases.{key}: {pattern!r} must hold {{year}} and {{seq}}")


def format_number(cases: dict[str, Any], series: str, year: int, seq: int) -> str:
    key = SERIES[series]
    pattern = str(cases[key])
    check_pattern(pattern, key)
    try:
        return pattern.format(authority_short=cases["authority_short"], year=year, seq=seq)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"cases.{key}: {exc} in {pattern!r}") from None


def take(cur, settings: Any, series: str, year: int) -> str:
    """The next number of `series` ('case' or 'decision') in `year`, skipping any already
    used (a number typed by hand, or one made before the pattern changed)."""
    cases = settings["cases"]
    column = "case_no" if series == "case" else "decision_no"
    while True:
        cur.execute(
            """INSERT INTO credit_case_numbers (series, year, last) VALUES (%s, %s, 1)
               ON CONFLICT (series, year)
               DO UPDATE SET last = credit_case_numbers.last + 1
               RETURNING last""",
            (series, year),
        )
        number = format_number(cases, series, year, cur.fetchone()[0])
        # column is one of two fixed names, never input
        cur.execute(f"SELECT 1 FROM credit_cases WHERE {column} = %s", (number,))  # noqa: S608
        if cur.fetchone() is None:
            return number


def peek(cur, settings: Any, series: str, year: int) -> str:
    """The number `take` would give now (shown as the proposal in a form; not reserved)."""
    cur.execute(
        "SELECT last FROM credit_case_numbers WHERE series = %s AND year = %s", (series, year)
    )
    row = cur.fetchone()
    return format_number(settings["cases"], series, year, (row[0] if row else 0) + 1)
