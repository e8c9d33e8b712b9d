"""The outbox: claiming due deliveries, recording their outcome, dead letters, the feed.

A delivery is claimed `FOR UPDATE SKIP LOCKED` (so with several dispatchers each row goes to
one of them) and leased: its `next_attempt_at` moves `alerts.lease_s` ahead and its attempt is
counted, then the claim commits and the HTTP call happens outside any transaction. A
dispatcher that dies mid-delivery leaves the row to be claimed again when the lease runs out
(at-least-once: the receiver sees the same idempotency key twice and drops one).

A failed attempt waits `backoff_base_s × 2^(attempt-1)` (at most `backoff_max_s`); after
`max_attempts` the row is dead-lettered (`status = 'dead'`), listed on the admin page, and
sent again only when someone presses retry (or `muck alerts retry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Delivery:
    id: int
    key: str
    channel: str
    target: str
    secret: str
    #: the alert's JSON as stored: sent as it is (no decoding and encoding again)
    body: str
    attempts: int
    active: bool


def backoff_s(settings: Any, attempts: int) -> float:
    cfg = settings["alerts"]
    return min(float(cfg["backoff_max_s"]), float(cfg["backoff_base_s"]) * 2 ** (attempts - 1))


def claim_due(conn, limit: int, lease_s: float) -> list[Delivery]:
    """Up to `limit` due deliveries, leased to this caller; commits."""
    with conn.cursor() as cur:
        cur.execute(
            """WITH due AS (
                   SELECT id FROM alert_outbox
                   WHERE status = 'pending' AND next_attempt_at <= now()
                   ORDER BY next_attempt_at, id
                   LIMIT %s
                   FOR UPDATE SKIP LOCKED
               )
               UPDATE alert_outbox o
               SET next_attempt_at = now() + make_interval(secs => %s), attempts = o.attempts + 1
               FROM due, alert_subscriptions s
               WHERE o.id = due.id AND s.id = o.subscription_id
               RETURNING o.id, o.idempotency_key, o.channel, s.target, s.secret, o.payload::text, o.attempts,
                         s.active""",
            (limit, lease_s),
        )
        rows = [Delivery(*row) for row in cur.fetchall()]
    conn.commit()
    rows.sort(key=lambda d: d.id)
    return rows


def record_outcomes(conn, settings: Any, outcomes: list[tuple[Delivery, str | None]]) -> int:
    """Store what happened to each claimed delivery (error None = delivered); commits.
    Returns how many were dead-lettered."""
    max_attempts = int(settings["alerts"]["max_attempts"])
    dead = 0
    delivered = [d.id for d, error in outcomes if d.active and error is None]
    with conn.cursor() as cur:
        if delivered:  # the usual case, in one statement
            cur.execute(
                """UPDATE alert_outbox SET status = 'delivered', delivered_at = now(),
                       last_error = NULL WHERE id = ANY(%s)""",
                (delivered,),
            )
        for delivery, error in outcomes:
            if not delivery.active:
                cur.execute(
                    """UPDATE alert_outbox SET status = 'cancelled',
                           last_error = 'subscription removed' WHERE id = %s""",
                    (delivery.id,),
                )
            elif error is None:
                continue
            elif delivery.attempts >= max_attempts:
                dead += 1
                cur.execute(
                    "UPDATE alert_outbox SET status = 'dead', last_error = %s WHERE id = %s",
                    (error[:1000], delivery.id),
                )
            else:
                cur.execute(
                    """UPDATE alert_outbox SET last_error = %s,
                           next_attempt_at = now() + make_interval(secs => %s) WHERE id = %s""",
                    (error[:1000], backoff_s(settings, delivery.attempts), delivery.id),
                )
    conn.commit()
    return dead


def seconds_to_next_due(conn) -> float | None:
    """How long until the next pending delivery is due (0 if one is), None if none waits."""
    # Not greatest(0, …) in SQL: GREATEST ignores NULL, so an empty outbox came back as 0,
    # "due now", and the dispatcher never slept (524 passes a second on an idle platform,
    # half a core of PostgreSQL).
    with conn.cursor() as cur:
        cur.execute(
            """SELECT extract(epoch FROM min(next_attempt_at) - now())::float8
               FROM alert_outbox WHERE status = 'pending'"""
        )
        value = cur.fetchone()[0]
    conn.commit()
    return None if value is None else max(0.0, value)


def retry(cur, outbox_id: int) -> bool:
    """Send a dead letter again from scratch (its attempts start over). False if `outbox_id`
    is not a dead letter."""
    cur.execute(
        """UPDATE alert_outbox SET status = 'pending', attempts = 0, next_attempt_at = now()
           WHERE id = %s AND status = 'dead' RETURNING id""",
        (outbox_id,),
    )
    if cur.fetchone() is None:
        return False
    cur.execute("SELECT pg_notify('alert_outbox', '')")
    return True


DEAD_COLUMNS = (
    "id",
    "idempotency_key",
    "subscription_id",
    "owner_kind",
    "owner",
    "channel",
    "target",
    "violation_id",
    "event",
    "attempts",
    "last_error",
    "created_at",
    "next_attempt_at",
)


def dead_letters(cur, *, limit: int = 200) -> list[dict]:
    """Dead-lettered deliveries, newest first."""
    cur.execute(
        """SELECT o.id, o.idempotency_key, o.subscription_id, s.owner_kind, s.owner, o.channel,
                  s.target, o.violation_id, o.event, o.attempts, o.last_error, o.created_at,
                  o.next_attempt_at
           FROM alert_outbox o JOIN alert_subscriptions s ON s.id = o.subscription_id
           WHERE o.status = 'dead' ORDER BY o.id DESC LIMIT %s""",
        (limit,),
    )
    return [dict(zip(DEAD_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def count_by_status(cur) -> dict[str, int]:
    cur.execute("SELECT status, count(*) FROM alert_outbox GROUP BY status")
    return dict(cur.fetchall())


# The dashboard's live feed: alerts of channel `feed` addressed to a user.


def feed_unread(cur, username: str) -> int:
    cur.execute(
        """SELECT count(*) FROM alert_outbox
           WHERE recipient = %s AND channel = 'feed' AND read_at IS NULL""",
        (username,),
    )
    return cur.fetchone()[0]


def feed_items(
    cur, username: str, *, after_id: int = 0, unread_only: bool = False, limit: int = 100
) -> list[dict]:
    """The user's feed alerts after `after_id`: oldest first when following a stream
    (`after_id` > 0), else the newest `limit`."""
    order = "ASC" if after_id else "DESC"
    cur.execute(
        f"""SELECT id, payload, created_at, read_at FROM alert_outbox
            WHERE recipient = %s AND channel = 'feed' AND id > %s
              AND (NOT %s OR read_at IS NULL)
            ORDER BY id {order} LIMIT %s""",  # noqa: S608 - order is one of two constants
        (username, after_id, unread_only, limit),
    )
    return [
        {"id": i, "payload": payload, "created_at": created, "read_at": read}
        for i, payload, created, read in cur.fetchall()
    ]


def latest_feed_id(cur, username: str) -> int:
    cur.execute(
        "SELECT coalesce(max(id), 0) FROM alert_outbox WHERE recipient = %s AND channel = 'feed'",
        (username,),
    )
    return cur.fetchone()[0]


def mark_read(cur, username: str, ids: list[int] | None = None) -> int:
    """Mark the user's own alerts (these ids, or all) as read; how many changed."""
    cur.execute(
        """UPDATE alert_outbox SET read_at = now()
           WHERE recipient = %s AND channel = 'feed' AND read_at IS NULL
             AND (%s::bigint[] IS NULL OR id = ANY(%s::bigint[]))""",
        (username, ids, ids),
    )
    return cur.rowcount
