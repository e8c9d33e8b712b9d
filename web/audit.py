"""The audit log: who changed what, when, with the record before and after.

`record()` writes in the caller's transaction, so the audit row commits or rolls back with
the change it describes.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

from psycopg2.extras import Json


def _default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    return str(value)


def _json(value: Any) -> Json | None:
    if value is None:
        return None
    return Json(json.loads(json.dumps(value, default=_default, ensure_ascii=False)))


def _request_actor() -> tuple[int | None, str | None, str | None]:
    try:
        from flask import has_request_context, request
        from flask_login import current_user
    except ImportError:  # pragma: no cover
        return None, None, None
    if not has_request_context():
        return None, None, None
    addr = request.remote_addr
    if current_user and current_user.is_authenticated:
        return current_user.id, current_user.username, addr
    return None, None, addr


def record(
    cur,
    action: str,
    entity: str,
    entity_id: Any,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    *,
    actor: Any = None,
) -> None:
    """Append one audit row. `actor` is a User or a text label (e.g. "cli:root"); inside a
    request it defaults to the logged-in user."""
    user_id, username, addr = _request_actor()
    if actor is not None:
        if isinstance(actor, str):
            user_id, username = None, actor
        else:
            user_id, username = actor.id, actor.username
    cur.execute(
        """INSERT INTO audit_log (user_id, username, action, entity, entity_id, before, after,
                                  remote_addr)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (
            user_id,
            username,
            action,
            entity,
            None if entity_id is None else str(entity_id),
            _json(before),
            _json(after),
            addr,
        ),
    )
