"""Fan-out: every new violation event × every subscription that wants it → one outbox row.

It reads `violation_events` (compliance's record of everything that happens to a violation)
after a cursor, so nothing the rules or an officer did is missed, whichever process did it,
and a dispatcher that was down catches up from where it stopped. The outbox row's
idempotency key (`v<violation>-e<event>-s<subscription>`) is unique: running fan-out twice
over the same events inserts nothing the second time.

**Gaps.** Event ids come from a sequence, assigned when the row is inserted, but the rows
become visible when their transaction commits: a collector's batch may hold id 41 while id
42, from another collector, is already committed. Fan-out therefore fans out every event it
sees, but moves the cursor only over ids without a hole below them. A hole is either a
transaction still running (its events will appear) or one that rolled back (they never
will): it is stepped over once every transaction of this database that held a transaction
id when the hole was first seen has ended (`pg_stat_activity.backend_xid`), and at least
`alerts.gap_wait_s` has gone by — or, whatever runs, after `alerts.gap_max_wait_s` (event
writers are batch transactions of well under a second; a transaction open that long is an
idle session, not one about to write events). Events already fanned out above a hole are
remembered and not read again.

Several processes may run fan-out: the cursor row is taken `FOR UPDATE SKIP LOCKED`, so one
pass runs at a time and the others go on delivering.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2.extras

from alerts.outbox import Delivery
from alerts.subscriptions import Subscription, list_subscriptions
from compliance.pipeline import PIPELINE

KIND_LABELS = {rule.kind: dict(rule.label) for rule in PIPELINE}
# What an event means to the person alerted (the group robots' titles are Chinese).
EVENT_LABELS = {
    "detected": {"zh": "新违规", "en": "New violation"},
    "ended": {"zh": "违规结束", "en": "Violation ended"},
    "revised": {"zh": "违规已修正", "en": "Violation revised"},
    "withdrawn": {"zh": "违规已撤回", "en": "Violation withdrawn"},
    "replay_disagrees": {"zh": "复核结果不一致", "en": "Re-evaluation disagrees"},
    "confirm": {"zh": "违规已确认", "en": "Violation confirmed"},
    "dismiss": {"zh": "违规已驳回", "en": "Violation dismissed"},
    "open_case": {"zh": "已立案", "en": "Case opened"},
    "close": {"zh": "已结案", "en": "Case closed"},
}

_EVENTS = """
SELECT e.id, e.action, e.at, v.id, v.kind, v.severity, v.status, v.district_code,
       v.company_id, t.plate, c.name, v.started_at, v.ended_at, v.worst_value, v.worst_unit,
       v.lat, v.lon, v.zone_code, v.permit_no, v.points
FROM violation_events e
JOIN violations v ON v.id = e.violation_id
JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id
WHERE e.id > %s AND NOT e.id = ANY(%s)
ORDER BY e.id
LIMIT %s
"""
_COLUMNS = (
    "event_id",
    "event",
    "at",
    "id",
    "kind",
    "severity",
    "status",
    "district_code",
    "company_id",
    "plate",
    "company",
    "started_at",
    "ended_at",
    "worst_value",
    "worst_unit",
    "lat",
    "lon",
    "zone_code",
    "permit_no",
    "points",
)
# What the alert carries of the violation as it is (the times follow, in UTC and local).
_VIOLATION_FIELDS = tuple(
    c for c in _COLUMNS if c not in ("event_id", "event", "at", "started_at", "ended_at")
)
_INSERT = """
INSERT INTO alert_outbox (idempotency_key, subscription_id, violation_id, event_id, event,
    channel, recipient, payload, status, delivered_at, attempts, next_attempt_at)
VALUES %s
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, idempotency_key, subscription_id, channel, recipient, payload::text
"""
_TEMPLATE = (
    "(%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, CASE WHEN %s THEN now() END, %s, "
    "now() + make_interval(secs => %s))"
)


def idempotency_key(violation_id: int, event_id: int, subscription_id: int) -> str:
    return f"v{violation_id}-e{event_id}-s{subscription_id}"


def violation_url(base_url: str, violation_id: int) -> str:
    return f"{base_url.rstrip('/')}/violations/{violation_id}"


@dataclass
class FanOutResult:
    events: int = 0
    alerts: int = 0
    #: user names whose feed got a new alert (the dashboard's streams are told)
    feed_recipients: set[str] = field(default_factory=set)
    #: whether a delivery now waits for the dispatcher
    deliveries: bool = False
    #: deliveries claimed as they were written (FanOut(claim_lease_s=…)): send them now
    claimed: list[Delivery] = field(default_factory=list)


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value is not None else None


class FanOut:
    """One per process: it remembers the hole it is waiting on between passes.

    With `claim_lease_s` (the dispatcher's), the webhook and robot rows it writes are claimed
    for this process at once, as `claim_due` would (attempt counted, leased), and returned
    to be sent: a row is written twice (inserted, then its outcome) instead of three times,
    and the first alerts of a burst go out without waiting for a claim round."""

    def __init__(self, settings: Any, *, claim_lease_s: float | None = None) -> None:
        cfg = settings["alerts"]
        self.claim_lease_s = claim_lease_s
        self.batch = int(cfg["batch"])
        self.base_url = str(cfg["public_base_url"])
        self.gap_wait_s = float(cfg["gap_wait_s"])
        self.timezone = str(settings.city["timezone"])
        self._tz = ZoneInfo(self.timezone)
        self.gap_max_wait_s = float(cfg["gap_max_wait_s"])
        # (first missing id, transactions running when it was first seen, monotonic time)
        self._gap: tuple[int, list[str], float] | None = None
        # events above the cursor already fanned out (while a hole holds the cursor)
        self._seen: set[int] = set()

    def payload(self, row: dict, subscription: Subscription) -> dict:
        """The alert as every channel sends it (the webhook body)."""
        key = idempotency_key(row["id"], row["event_id"], subscription.id)
        labels = KIND_LABELS.get(row["kind"], {"zh": row["kind"], "en": row["kind"]})
        violation = {name: row[name] for name in _VIOLATION_FIELDS}
        violation.update(
            kind_label=labels["zh"],
            kind_label_en=labels["en"],
            started_at=_iso(row["started_at"]),
            ended_at=_iso(row["ended_at"]),
            started_local=row["started_at"].astimezone(self._tz).strftime("%Y-%m-%d %H:%M:%S"),
        )
        event_label = EVENT_LABELS.get(row["event"], {"zh": row["event"], "en": row["event"]})
        return {
            "idempotency_key": key,
            "event": row["event"],
            "event_id": row["event_id"],
            "event_label": event_label["zh"],
            "event_label_en": event_label["en"],
            "at": _iso(row["at"]),
            "timezone": self.timezone,
            "subscription_id": subscription.id,
            "url": violation_url(self.base_url, row["id"]),
            "violation": violation,
        }

    def run(self, conn) -> FanOutResult:
        """One pass over the events after the cursor (at most `alerts.batch`); commits."""
        result = FanOutResult()
        with conn.cursor() as cur:
            cur.execute(
                "SELECT last_id FROM alert_cursors WHERE name = 'fanout' FOR UPDATE SKIP LOCKED"
            )
            row = cur.fetchone()
            if row is None:  # another process is fanning out right now (or the row is gone)
                cur.execute(
                    "INSERT INTO alert_cursors (name) VALUES ('fanout') ON CONFLICT DO NOTHING"
                )
                conn.commit()
                return result
            last_id = row[0]
            self._seen = {i for i in self._seen if i > last_id}
            cur.execute(_EVENTS, (last_id, sorted(self._seen), self.batch))
            events = [dict(zip(_COLUMNS, r, strict=True)) for r in cur.fetchall()]
            result.events = len(events)
            ids = sorted(self._seen | {e["event_id"] for e in events})
            if not ids:
                conn.commit()
                return result
            subscriptions = list_subscriptions(cur) if events else []
            values = []
            for event in events:
                for sub in subscriptions:
                    if not sub.matches(event["event"], event, event["at"]):
                        continue
                    feed = sub.channel == "feed"
                    claim = not feed and self.claim_lease_s is not None
                    payload = self.payload(event, sub)
                    values.append(
                        (
                            payload["idempotency_key"],
                            sub.id,
                            event["id"],
                            event["event_id"],
                            event["event"],
                            sub.channel,
                            sub.owner if feed else None,
                            json.dumps(payload, ensure_ascii=False),
                            "delivered" if feed else "pending",
                            feed,
                            1 if claim else 0,
                            self.claim_lease_s if claim else 0,
                        )
                    )
            if values:
                inserted = psycopg2.extras.execute_values(
                    cur, _INSERT, values, template=_TEMPLATE, fetch=True
                )
                result.alerts = len(inserted)
                by_id = {sub.id: sub for sub in subscriptions}
                for outbox_id, key, sub_id, channel, recipient, body in inserted:
                    if channel == "feed":
                        result.feed_recipients.add(recipient)
                    elif self.claim_lease_s is not None:
                        sub = by_id[sub_id]
                        result.claimed.append(
                            Delivery(outbox_id, key, channel, sub.target, sub.secret, body, 1, True)
                        )
                    else:
                        result.deliveries = True
            new_last = self._advance(cur, last_id, ids)
            if new_last != last_id:
                cur.execute(
                    "UPDATE alert_cursors SET last_id = %s, updated_at = now() WHERE name = 'fanout'",
                    (new_last,),
                )
            # Told at commit: the dashboard's streams (by user) and other dispatchers.
            for recipient in sorted(result.feed_recipients):
                cur.execute("SELECT pg_notify('alert_feed', %s)", (recipient,))
            if result.deliveries:
                cur.execute("SELECT pg_notify('alert_outbox', '')")
        conn.commit()
        self._seen.update(i for i in ids if i > new_last)
        return result

    def _advance(self, cur, last_id: int, ids: list[int]) -> int:
        cursor = last_id
        for event_id in ids:
            if event_id == cursor + 1 or self._hole_closed(cur, cursor + 1):
                cursor = event_id
            else:
                break
        return cursor

    def _hole_closed(self, cur, missing: int) -> bool:
        """Whether the events from `missing` on that we have not seen will never appear."""
        if self._gap is None or self._gap[0] != missing:
            cur.execute(
                """SELECT coalesce(array_agg(backend_xid::text), '{}') FROM pg_stat_activity
                   WHERE datname = current_database() AND backend_xid IS NOT NULL
                     AND pid <> pg_backend_pid()"""
            )
            self._gap = (missing, cur.fetchone()[0], time.monotonic())
            return False
        _, running, since = self._gap
        waited = time.monotonic() - since
        if waited < self.gap_wait_s:
            return False
        if waited < self.gap_max_wait_s and running:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_xid::text = ANY(%s)",
                (running,),
            )
            if cur.fetchone()[0]:
                return False
        self._gap = None
        return True
