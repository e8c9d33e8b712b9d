"""Dashboard users, roles, permissions and API tokens (no Flask here: the CLI uses it too)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from werkzeug.security import check_password_hash, generate_password_hash

from web.audit import record

ROLES = ("supervisor", "enforcement", "credit", "admin")
ROLE_ALIASES = {
    "administrator": "admin",
    "enforcement_officer": "enforcement",
    "credit_officer": "credit",
}

# What each role may do.
PERMISSIONS: dict[str, frozenset[str]] = {
    "overview": frozenset(ROLES),
    "map": frozenset({"supervisor", "enforcement", "admin"}),
    # violations and black trucks: view (list, evidence, history)
    "violations": frozenset({"supervisor", "enforcement", "admin"}),
    # evidence packs (PDF, ZIP) and the evidence JSON: whoever relies on a violation
    "evidence": frozenset(ROLES),
    # review actions (confirm, dismiss, open a case, close), black trucks handled, exports
    "enforce": frozenset({"enforcement", "admin"}),
    "registry": frozenset({"admin"}),
    "users": frozenset({"admin"}),
    # the live feed of alerts, one's own subscriptions (alerts link to violation pages)
    "alerts": frozenset({"supervisor", "enforcement", "admin"}),
    # every subscription (teams, webhooks, group robots) and the dead letters
    "alerts_admin": frozenset({"admin"}),
    # cases and penalty decisions: read (the list, a case, its history); opening, editing,
    # deciding, publishing, closing, withdrawing and the notices take "enforce"
    "cases": frozenset(ROLES),
    # credit (web/credit.py): scores, explanations and lists are read by all who supervise;
    # only credit officers (and admins) sign listings off, remove entries, issue the listing
    # notice, and export or re-download files for the credit platform
    "credit": frozenset(ROLES),
    "credit_signoff": frozenset({"credit", "admin"}),
    "credit_export": frozenset({"credit", "admin"}),
}
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MIN_PASSWORD = 8
TOKEN_PREFIX = "mw_"


class UserError(ValueError):
    """A user or token request that cannot be honoured; the message says why."""


@dataclass
class User:
    """The logged-in user (Flask-Login protocol)."""

    id: int
    username: str
    role: str
    active: bool
    display_name: str | None = None
    must_change_password: bool = False

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_active(self) -> bool:
        return self.active

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


_COLUMNS = "id, username, role, active, display_name, must_change_password"


def normalise_role(role: str) -> str:
    role = ROLE_ALIASES.get(role.strip().lower(), role.strip().lower())
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    return role


def get_user(cur, user_id: int) -> User | None:
    cur.execute(f"SELECT {_COLUMNS} FROM web_users WHERE id = %s", (user_id,))  # noqa: S608
    row = cur.fetchone()
    return User(*row) if row else None


def user_exists(cur, username: str) -> bool:
    """Whether a dashboard user has this name (alerts stores subscribers by name)."""
    cur.execute("SELECT 1 FROM web_users WHERE username = %s", (username,))
    return cur.fetchone() is not None


def create_user(
    cur, username: str, password: str, role: str, *, display_name: str | None = None, actor=None
) -> User:
    if not USERNAME.match(username or ""):
        raise UserError("username: 1-64 characters of A-Z a-z 0-9 _ . @ -")
    _check_password(password, username)
    role = normalise_role(role)
    cur.execute("SELECT 1 FROM web_users WHERE username = %s", (username,))
    if cur.fetchone():
        raise UserError(f"user {username!r} already exists")
    cur.execute(
        f"""INSERT INTO web_users (username, password_hash, role, display_name)
            VALUES (%s, %s, %s, %s) RETURNING {_COLUMNS}""",  # noqa: S608
        (username, generate_password_hash(password), role, display_name),
    )
    user = User(*cur.fetchone())
    record(
        cur,
        "user.create",
        "web_users",
        user.id,
        None,
        {"username": username, "role": role, "display_name": display_name},
        actor=actor,
    )
    return user


def _check_password(password: str | None, username: str) -> None:
    from web.passwords import password_problem

    problem = password_problem(password or "", username)
    if problem:
        raise UserError(f"password: {problem}")


def set_password(cur, user_id: int, password: str, *, actor=None) -> User | None:
    """A new password (checked against the policy); clears a forced reset."""
    user = get_user(cur, user_id)
    if user is None:
        return None
    _check_password(password, user.username)
    cur.execute(
        "UPDATE web_users SET password_hash = %s, must_change_password = false WHERE id = %s",
        (generate_password_hash(password), user_id),
    )
    record(cur, "user.password_changed", "web_users", user_id, None, None, actor=actor)
    user.must_change_password = False
    return user


def force_password_reset(cur, user_id: int, *, actor=None) -> User | None:
    """The user must choose a new password at the next page they open (or log-in)."""
    user = get_user(cur, user_id)
    if user is None:
        return None
    cur.execute("UPDATE web_users SET must_change_password = true WHERE id = %s", (user_id,))
    record(
        cur,
        "user.password_reset_forced",
        "web_users",
        user_id,
        None,
        {"must_change_password": True},
        actor=actor,
    )
    user.must_change_password = True
    return user


def set_user_active(cur, user_id: int, active: bool, *, actor=None) -> User | None:
    before = get_user(cur, user_id)
    if before is None:
        return None
    cur.execute("UPDATE web_users SET active = %s WHERE id = %s", (active, user_id))
    record(
        cur,
        "user.activate" if active else "user.deactivate",
        "web_users",
        user_id,
        {"active": before.active},
        {"active": active},
        actor=actor,
    )
    before.active = active
    return before


def authenticate(cur, username: str, password: str) -> User | None:
    """The user when the password matches an active account, else None (same cost either way)."""
    cur.execute(
        f"SELECT {_COLUMNS}, password_hash FROM web_users WHERE username = %s",  # noqa: S608
        (username,),
    )
    row = cur.fetchone()
    if row is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    user, password_hash = User(*row[:6]), row[6]
    if not check_password_hash(password_hash, password) or not user.active:
        return None
    cur.execute("UPDATE web_users SET last_login_at = now() WHERE id = %s", (user.id,))
    return user


_DUMMY_HASH = generate_password_hash("not-a-real-password")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(cur, username: str, name: str = "", *, actor=None) -> str:
    """A new API token for the user; the token itself is returned once and never stored."""
    cur.execute("SELECT id, active FROM web_users WHERE username = %s", (username,))
    row = cur.fetchone()
    if row is None:
        raise UserError(f"no user {username!r}")
    if not row[1]:
        raise UserError(f"user {username!r} is deactivated")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    cur.execute(
        "INSERT INTO web_api_tokens (user_id, token_hash, name) VALUES (%s, %s, %s) RETURNING id",
        (row[0], hash_token(token), name),
    )
    token_id = cur.fetchone()[0]
    record(
        cur,
        "token.create",
        "web_api_tokens",
        token_id,
        None,
        {"user": username, "name": name},
        actor=actor,
    )
    return token


def user_for_token(cur, token: str) -> User | None:
    cur.execute(
        f"""UPDATE web_api_tokens t SET last_used_at = now()
            FROM web_users u
            WHERE t.token_hash = %s AND t.revoked_at IS NULL AND u.id = t.user_id AND u.active
            RETURNING {", ".join("u." + c.strip() for c in _COLUMNS.split(","))}""",  # noqa: S608
        (hash_token(token),),
    )
    row = cur.fetchone()
    return User(*row) if row else None
