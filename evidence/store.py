"""Evidence records and their audit trail in the database; the fixes around a violation.

`evidence_records` holds one current record per violation (older versions superseded when a
revision made a final record wrong), `evidence_audit` every capture and export. Reads here
are shared by the capture job, the CLI and the dashboard.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from evidence.content import Evidence, Fix, decode

# The fixes of a violation's truck from `since` to `until`, oldest first, at most `limit`.
_FIXES = """
SELECT fix_time, lat, lon, speed_kmh, heading, lid::text, lift::text, load::text, acc, alarms,
       device_id
FROM positions
WHERE truck_id = %(truck)s AND fix_time >= %(since)s AND fix_time <= %(until)s
ORDER BY fix_time LIMIT %(limit)s
"""


def ms_time(value: dt.datetime) -> dt.datetime:
    """Times in evidence are kept to the millisecond (what the canonical text holds)."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def fixes_between(
    cur,
    truck_id: int,
    since: dt.datetime,
    until: dt.datetime,
    limit: int,
    episode: tuple[dt.datetime, dt.datetime | None],
) -> list[Fix]:
    """The truck's stored fixes in [since, until], each marked whether it lies inside the
    episode (start .. end, or start onwards while it is open)."""
    cur.execute(_FIXES, {"truck": truck_id, "since": since, "until": until, "limit": limit})
    start, end = episode
    out = []
    for t, lat, lon, speed, heading, lid, lift, load, acc, alarms, device in cur.fetchall():
        out.append(
            Fix(
                t=ms_time(t),
                lat=lat,
                lon=lon,
                speed=None if speed is None else float(speed),
                heading=heading,
                lid=lid,
                lift=lift,
                load=load,
                acc=acc,
                alarms=list(alarms or []),
                device=device,
                in_episode=t >= start and (end is None or t <= end),
            )
        )
    return out


def window(settings: Any, started_at: dt.datetime, ended_at: dt.datetime | None, now=None):
    """The time range of the fixes kept: the margins around the episode (its end: now, while
    it is open)."""
    cfg = settings["evidence"]
    end = ended_at or now or dt.datetime.now(dt.UTC)
    return (
        ms_time(started_at - dt.timedelta(seconds=float(cfg["margin_before_s"]))),
        ms_time(end + dt.timedelta(seconds=float(cfg["margin_after_s"]))),
    )


def final_due(settings: Any, ended_at: dt.datetime | None) -> dt.datetime | None:
    """When the evidence of an episode that ended at `ended_at` becomes final."""
    if ended_at is None:
        return None
    return ended_at + dt.timedelta(seconds=float(settings["evidence"]["final_delay_s"]))


@dataclass
class Record:
    id: int
    violation_id: int
    version: int
    final: bool
    captured_at: dt.datetime
    final_due_at: dt.datetime | None
    fixes: int
    content: str
    sha256: str
    superseded_at: dt.datetime | None

    @property
    def evidence(self) -> Evidence:
        return decode(self.content)


_CURRENT = """
SELECT id, violation_id, version, final, captured_at, final_due_at, fixes, content, sha256,
       superseded_at
FROM evidence_records WHERE violation_id = %s AND superseded_at IS NULL
"""
_RECORDS = """
SELECT id, violation_id, version, final, captured_at, final_due_at, fixes, content, sha256,
       superseded_at
FROM evidence_records
WHERE (%(v)s::bigint IS NULL OR violation_id = %(v)s) AND id > %(after)s
ORDER BY id LIMIT %(limit)s
"""


def current_record(cur, violation_id: int) -> Record | None:
    """The violation's evidence in force (None: not captured yet)."""
    cur.execute(_CURRENT, (violation_id,))
    row = cur.fetchone()
    return Record(*row) if row else None


def records(cur, violation_id: int | None = None, *, after_id: int = 0, limit: int = 1000):
    """Every record (of one violation, or all), every version, in id order from `after_id`."""
    cur.execute(_RECORDS, {"v": violation_id, "after": after_id, "limit": limit})
    return [Record(*row) for row in cur.fetchall()]


def audit(
    cur,
    action: str,
    actor: str,
    violation_id: int,
    record: Record | None = None,
    detail: dict | None = None,
) -> None:
    """One line of the evidence audit trail (in the caller's transaction)."""
    cur.execute(
        """INSERT INTO evidence_audit (actor, action, violation_id, record_id, sha256, detail)
           VALUES (%s, %s, %s, %s, %s, %s::jsonb)""",
        (
            actor,
            action,
            violation_id,
            record.id if record else None,
            record.sha256 if record else None,
            json.dumps(detail or {}, ensure_ascii=False),
        ),
    )


def audit_trail(cur, violation_id: int) -> list[dict]:
    cur.execute(
        """SELECT at, actor, action, record_id, sha256, detail FROM evidence_audit
           WHERE violation_id = %s ORDER BY at, id""",
        (violation_id,),
    )
    keys = ("at", "actor", "action", "record_id", "sha256", "detail")
    return [dict(zip(keys, row, strict=True)) for row in cur.fetchall()]


@dataclass
class PageEvidence:
    """What the violation page shows: the frozen record once final; until then the fixes
    straight from `positions` and when the evidence will be fixed."""

    record: Record | None
    fixes: list[Fix]
    final: bool
    #: when the evidence becomes final (None while the episode is open)
    final_due_at: dt.datetime | None


def page_evidence(cur, settings: Any, violation: dict) -> PageEvidence:
    """`violation`: the row as compliance.violations.get_violation returns it."""
    record = current_record(cur, int(violation["id"]))
    start = _as_time(violation["started_at"])
    end = _as_time(violation.get("ended_at"))
    if record is not None and record.final:
        return PageEvidence(record, record.evidence.fixes, True, None)
    since, until = window(settings, start, end)
    limit = int(settings["evidence"]["max_fixes"])
    fixes = fixes_between(cur, int(violation["truck_id"]), since, until, limit, (start, end))
    return PageEvidence(record, fixes, False, final_due(settings, end))


def _as_time(value) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)
