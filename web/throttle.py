"""Log-in throttling: per account and per address, with exponential back-off.

After `login_free_failures` failed log-ins of one account within `login_window_s` (or
`login_free_failures_per_address` from one address, which catches one client trying many
accounts), every further attempt, the right password included, is refused until the back-off
has passed: `login_backoff_initial_s` after the first excess failure, doubling with each
further one up to `login_backoff_max_s`. A successful log-in clears its account's failures.
The failures live in the database, so every gunicorn worker and every web host sees the same
count. Each refusal is written to the audit log (`user.login_throttled`).
"""

from __future__ import annotations

import datetime as dt
from typing import Any


def _backoff(failures: int, free: int, cfg: dict[str, Any]) -> float:
    excess = failures - free
    if excess < 0:
        return 0.0
    return min(float(cfg["login_backoff_initial_s"]) * 2**excess, float(cfg["login_backoff_max_s"]))


def retry_after(cur, username: str, remote_addr: str, cfg: dict[str, Any]) -> float:
    """Seconds until a log-in of `username` from `remote_addr` may be tried (0: now)."""
    window = float(cfg["login_window_s"])
    cur.execute(
        """SELECT count(*) FILTER (WHERE username = %(u)s),
                  max(at) FILTER (WHERE username = %(u)s),
                  count(*) FILTER (WHERE remote_addr = %(a)s),
                  max(at) FILTER (WHERE remote_addr = %(a)s),
                  now()
           FROM web_login_failures
           WHERE (username = %(u)s OR remote_addr = %(a)s)
             AND at > now() - %(w)s * interval '1 s'""",
        {"u": username, "a": remote_addr, "w": window},
    )
    by_user, last_user, by_addr, last_addr, now = cur.fetchone()
    wait = 0.0
    for failures, last, free in (
        (by_user, last_user, int(cfg["login_free_failures"])),
        (by_addr, last_addr, int(cfg["login_free_failures_per_address"])),
    ):
        if last is None:
            continue
        until = last + dt.timedelta(seconds=_backoff(failures, free, cfg))
        wait = max(wait, (until - now).total_seconds())
    return max(0.0, wait)


def record_failure(cur, username: str, remote_addr: str, cfg: dict[str, Any]) -> None:
    cur.execute(
        "DELETE FROM web_login_failures WHERE at < now() - %s * interval '1 s'",
        (float(cfg["login_window_s"]),),
    )
    cur.execute(
        "INSERT INTO web_login_failures (username, remote_addr) VALUES (%s, %s)",
        (username, remote_addr),
    )


def clear(cur, username: str) -> None:
    cur.execute("DELETE FROM web_login_failures WHERE username = %s", (username,))
