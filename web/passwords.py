"""The password policy for dashboard users (web and `muck user`): long enough, not all one
character, not a run like 12345678 or abcdefgh, not the username, and not on the list of
the most common passwords (`common_passwords.txt`: widely published leak top lists, with
the Chinese favourites such as 5201314 and woaini1314)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 256


@cache
def _common() -> frozenset[str]:
    text = (Path(__file__).with_name("common_passwords.txt")).read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower() for line in text.splitlines() if line.strip() and line[0] != "#"
    )


def _is_run(text: str) -> bool:
    """Consecutive code points up or down (12345678, abcdefgh, 87654321)."""
    steps = {ord(b) - ord(a) for a, b in zip(text, text[1:], strict=False)}
    return steps in ({1}, {-1})


def password_problem(password: str, username: str = "") -> str | None:
    """Why the password is refused, or None."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    lowered = password.lower()
    if len(set(password)) == 1:
        return "not one character repeated"
    if len(set(password)) <= 2 and len(password) < 16:
        return "too few different characters"
    if _is_run(lowered):
        return "not a run of consecutive characters"
    if len(username) >= 3 and username.lower() in lowered:
        return "must not contain the username"
    if lowered in _common() or lowered.rstrip("0123456789!.") in _common():
        return "too common (on the list of the most used passwords)"
    return None
