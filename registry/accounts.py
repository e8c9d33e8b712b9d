"""Broker accounts: terminals, cameras and the platform's services, with hashed passwords.

A terminal's username is its device id and a camera's its camera id, so the broker's ACL
can tie each to its own topics (telemetry/broker_auth.py writes the files). Passwords are
generated here, returned once to the caller (`muck device provision` prints them) and kept
only as a PBKDF2-SHA512 hash in Mosquitto's own `$7$` format: the broker verifies them
itself and the database never holds a usable secret.

Every function works in the caller's transaction (`cur`) and never commits.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

from registry.service import RegistryError, bind_terminal, truck_id_for_plate

KINDS = ("terminal", "camera", "collector", "gateway", "web")
DEVICE_KINDS = ("terminal", "camera")
# The MQTT contract's id syntax (docs/mqtt-contract.md): no `/`, `+`, `#` or spaces, so a
# username can stand in a topic and in the ACL file as it is.
USERNAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
# Mosquitto 2's mosquitto_passwd uses 101 iterations; more costs every CONNECT on the broker
# (a reconnect storm of 20,000 terminals), and the passwords are random, not chosen by people.
PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12


def hash_password(password: str, *, iterations: int = PBKDF2_ITERATIONS) -> str:
    """`$7$iterations$salt$hash` as mosquitto_passwd writes it (salt and hash base64)."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt, digest = stored.split("$")
        if kind != "7":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def new_password() -> str:
    return secrets.token_urlsafe(24)


@dataclass(frozen=True)
class Provisioned:
    username: str
    kind: str
    password: str  # shown once; only its hash is stored
    terminal_id: int | None = None


def _check(username: str, kind: str) -> None:
    if kind not in KINDS:
        raise RegistryError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not USERNAME.match(username):
        raise RegistryError(
            f"{username!r}: an account name is 1-64 characters of A-Z a-z 0-9 _ . : -"
        )


def provision(
    cur,
    username: str,
    kind: str,
    *,
    plate: str | None = None,
    valid_from: dt.datetime | None = None,
    model: str | None = None,
    password: str | None = None,
) -> Provisioned:
    """Create the account (and, for a terminal with `plate`, its binding to that truck from
    `valid_from`). An account that exists, even revoked, is refused: rotate it instead, so
    one name never silently gets a second owner."""
    _check(username, kind)
    if plate and kind != "terminal":
        raise RegistryError("only a terminal is bound to a truck (--plate)")
    cur.execute("SELECT kind, revoked_at FROM broker_accounts WHERE username = %s", (username,))
    row = cur.fetchone()
    if row is not None:
        state = "revoked" if row[1] else "active"
        raise RegistryError(f"{username}: a {row[0]} account exists ({state}); use rotate")
    terminal_id = None
    if plate:
        terminal_id = bind_terminal(
            cur,
            username,
            truck_id_for_plate(cur, plate),
            valid_from or dt.datetime.now(dt.UTC),
            model=model,
        )
    password = password or new_password()
    cur.execute(
        "INSERT INTO broker_accounts (username, kind, password_hash) VALUES (%s, %s, %s)",
        (username, kind, hash_password(password)),
    )
    return Provisioned(username, kind, password, terminal_id)


def rotate(cur, username: str, *, password: str | None = None) -> Provisioned:
    """A new password for the account (a revoked one is re-activated by this)."""
    password = password or new_password()
    cur.execute(
        """UPDATE broker_accounts SET password_hash = %s, rotated_at = now(), revoked_at = NULL
           WHERE username = %s RETURNING kind""",
        (hash_password(password), username),
    )
    row = cur.fetchone()
    if row is None:
        raise RegistryError(f"{username}: no such broker account")
    return Provisioned(username, row[0], password)


def revoke(cur, username: str) -> bool:
    """Refuse the account from the next broker sync on; False if it was not active."""
    cur.execute(
        """UPDATE broker_accounts SET revoked_at = now()
           WHERE username = %s AND revoked_at IS NULL RETURNING id""",
        (username,),
    )
    if cur.fetchone() is not None:
        return True
    cur.execute("SELECT 1 FROM broker_accounts WHERE username = %s", (username,))
    if cur.fetchone() is None:
        raise RegistryError(f"{username}: no such broker account")
    return False


def ensure_service(cur, username: str, kind: str, password: str) -> bool:
    """A service account with exactly this password (from the deployment's environment):
    created, re-hashed when the password changed, re-activated. True when anything changed."""
    _check(username, kind)
    if kind in DEVICE_KINDS:
        raise RegistryError(f"{kind} accounts are provisioned, not taken from the environment")
    cur.execute(
        "SELECT kind, password_hash, revoked_at FROM broker_accounts WHERE username = %s",
        (username,),
    )
    row = cur.fetchone()
    if row is None:
        provision(cur, username, kind, password=password)
        return True
    if row[0] != kind:
        raise RegistryError(f"{username}: exists as a {row[0]} account, not {kind}")
    if row[2] is None and verify_password(password, row[1]):
        return False
    rotate(cur, username, password=password)
    return True


def active_accounts(cur) -> list[dict[str, Any]]:
    """Every account the broker should accept, by name (the sync writes them in this order)."""
    cur.execute(
        """SELECT username, kind, password_hash FROM broker_accounts
           WHERE revoked_at IS NULL ORDER BY username"""
    )
    return [{"username": u, "kind": k, "password_hash": h} for u, k, h in cur.fetchall()]


def list_accounts(cur) -> list[dict[str, Any]]:
    cur.execute(
        """SELECT username, kind, created_at, rotated_at, revoked_at FROM broker_accounts
           ORDER BY kind, username"""
    )
    cols = ("username", "kind", "created_at", "rotated_at", "revoked_at")
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
