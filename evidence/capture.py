"""Capturing evidence in the running product: a clock job of the collector.

    Job("evidence capture", CaptureJob(settings), settings["evidence"]["every_s"])

Each run (off the ingestion path, on its own connection):
1. queues the violations changed since its cursor (`violations.updated_at`: opened, grown,
   ended, revised, reviewed) in `evidence_pending`;
2. for each queued violation (at most `evidence.batch`): an episode that ended at least
   `final_delay_s` ago gets its final record and leaves the queue; one still open (or ended
   more recently) gets a provisional record, captured again every `refresh_s` while it
   grows; a withdrawn one, or one whose final record still matches, leaves the queue.
A final record is never rewritten: a violation revised by late fixes after that gets a new
version, and the old one stays (superseded). Every write is in the audit trail.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from core.db import transaction
from evidence.content import (
    Evidence,
    Facts,
    Measured,
    PermitVersion,
    RuleInForce,
    Sighting,
    Terminal,
    ZoneVersion,
    canonical,
    sha256,
)
from evidence.store import (
    Record,
    audit,
    current_record,
    final_due,
    fixes_between,
    ms_time,
    window,
)

log = logging.getLogger(__name__)

# Violations changed in the last few seconds before the cursor are read again on each run: a
# transaction that committed late with an older updated_at is not missed (the queue is keyed,
# so twice is once).
OVERLAP_S = 10.0
QUEUE_BATCH = 10_000

# New changes beyond the cursor (at most `limit`, oldest first, so the cursor always moves
# on), and the overlap before it again (small: seconds of changes; a row committed late with
# an older updated_at is found there).
_QUEUE = """
WITH cur AS (SELECT COALESCE((SELECT updated_at FROM evidence_cursor), '-infinity') AS at),
fresh AS (
    SELECT v.id, v.updated_at FROM violations v, cur
    WHERE v.updated_at > cur.at ORDER BY v.updated_at LIMIT %(limit)s
), again AS (
    SELECT v.id FROM violations v, cur
    WHERE v.updated_at > cur.at - make_interval(secs => %(overlap)s) AND v.updated_at <= cur.at
), queued AS (
    INSERT INTO evidence_pending (violation_id)
    SELECT id FROM fresh UNION SELECT id FROM again
    ON CONFLICT (violation_id) DO NOTHING
)
SELECT max(updated_at), count(*) FROM fresh
"""

_FACTS = """
SELECT v.id, v.kind, v.stream, v.truck_id, t.plate, c.name, c.credit_code, v.started_at,
       v.ended_at, v.lat, v.lon, v.zone_code, v.permit_no, v.district_code, v.detected_at,
       v.worst_value, v.worst_unit, v.severity, v.points, v.legal_basis, v.rule_params,
       v.status
FROM violations v JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id
WHERE v.id = %s
"""

# The version of a zone in force at a time; if the zone was created after it (a catalogue
# loaded after the fact), its first version, flagged as not in force.
_ZONE = """
(SELECT true, code, kind, name, district, valid_from::text, valid_to::text, active, geometry,
        attributes, NULLIF(recorded_from, '-infinity'), recorded_to
 FROM geofence_zone_history WHERE code = %(code)s AND recorded_from <= %(at)s
 ORDER BY recorded_from DESC LIMIT 1)
UNION ALL
(SELECT false, code, kind, name, district, valid_from::text, valid_to::text, active, geometry,
        attributes, NULLIF(recorded_from, '-infinity'), recorded_to
 FROM geofence_zone_history WHERE code = %(code)s AND recorded_from > %(at)s
 ORDER BY recorded_from LIMIT 1)
LIMIT 1
"""

# The permits in force for the truck at a time (by number when the violation names one).
_PERMITS = """
SELECT DISTINCT ON (permit_id) permit_id, number, snapshot,
       NULLIF(recorded_from, '-infinity'), recorded_to,
       recorded_from <= %(at)s AS in_force
FROM permit_history
WHERE (number = %(number)s
       OR (%(number)s::text IS NULL AND snapshot->'truck_ids' @> to_jsonb(%(truck)s::bigint)))
  AND (recorded_to IS NULL OR recorded_to > %(at)s)
ORDER BY permit_id, (recorded_from <= %(at)s) DESC,
         CASE WHEN recorded_from <= %(at)s THEN recorded_from END DESC, recorded_from
"""

_SIGHTINGS = """
SELECT camera_id, seen_at, plate, plate_color, direction, site_id, confidence, image_ref,
       CASE WHEN seen_at < %(start)s THEN extract(epoch FROM seen_at - %(start)s)
            WHEN seen_at > %(end)s THEN extract(epoch FROM seen_at - %(end)s)
            ELSE 0 END AS offset_s
FROM sightings
WHERE plate = %(plate)s AND seen_at >= %(since)s AND seen_at <= %(until)s
ORDER BY abs(CASE WHEN seen_at < %(start)s THEN extract(epoch FROM %(start)s - seen_at)
                  WHEN seen_at > %(end)s THEN extract(epoch FROM seen_at - %(end)s)
                  ELSE 0 END), seen_at
LIMIT %(limit)s
"""

_TERMINALS = """
SELECT device_id, valid_from, valid_to, model FROM terminals
WHERE truck_id = %(truck)s AND valid_from <= %(until)s
  AND (valid_to IS NULL OR valid_to > %(since)s)
ORDER BY valid_from, device_id
"""


def _rule(kind: str):
    from compliance.pipeline import PIPELINE

    return next((r for r in PIPELINE if r.kind == kind), None)


def _zone(cur, code: str, role: str, at: dt.datetime) -> ZoneVersion | None:
    cur.execute(_ZONE, {"code": code, "at": at})
    row = cur.fetchone()
    if row is None:
        return None
    in_force, code, kind, name, district, vfrom, vto, active, geometry, attrs, rfrom, rto = row
    return ZoneVersion(
        code=code,
        role=role,
        kind=kind,
        name=name,
        district=district,
        valid_from=vfrom,
        valid_to=vto,
        active=active,
        geometry=geometry,
        attributes=attrs or {},
        recorded_from=rfrom,
        recorded_to=rto,
        in_force=in_force,
    )


def build(cur, settings: Any, violation_id: int, now: dt.datetime) -> tuple[Evidence, str] | None:
    """The evidence of one violation as it stands now, and its status (None: no violation)."""
    cur.execute(_FACTS, (violation_id,))
    row = cur.fetchone()
    if row is None:
        return None
    (vid, kind, stream, truck, plate, company, credit, start, end, lat, lon, zone_code,
     permit_no, district, detected, worst, unit, severity, points, basis, params,
     status) = row  # fmt: skip
    cfg = settings["evidence"]
    due = final_due(settings, end)
    final = due is not None and due <= now
    since, until = window(settings, start, end, now)
    limit = int(cfg["max_fixes"])
    fixes = fixes_between(cur, truck, since, until, limit + 1, (start, end))
    truncated = len(fixes) > limit
    fixes = fixes[:limit]

    permits = []
    cur.execute(_PERMITS, {"at": start, "number": permit_no, "truck": truck})
    for _pid, number, snap, rfrom, rto, in_force in cur.fetchall():
        permits.append(
            PermitVersion(
                number=number,
                permit=snap,
                recorded_from=rfrom,
                recorded_to=rto,
                in_force=in_force,
            )
        )
    wanted: list[tuple[str, str]] = []
    if zone_code:
        wanted.append((zone_code, "violation"))
    for p in permits:
        wanted.append((p.permit.get("origin_site"), "origin"))
        wanted += [(code, "disposal") for code in p.permit.get("disposal_sites") or []]
        wanted += [(code, "route") for code in p.permit.get("routes") or []]
    zones, seen = [], set()
    for code, role in wanted:
        if code and code not in seen:
            seen.add(code)
            zone = _zone(cur, code, role, start)
            if zone is not None:
                zones.append(zone)

    episode_end = end or now
    reach = dt.timedelta(seconds=float(cfg["sightings_window_s"]))
    cur.execute(
        _SIGHTINGS,
        {
            "plate": plate,
            "start": start,
            "end": episode_end,
            "since": start - reach,
            "until": episode_end + reach,
            "limit": int(cfg["max_sightings"]),
        },
    )
    sightings = [
        Sighting(
            camera_id=cam,
            seen_at=seen_at,
            plate=p,
            plate_color=color,
            direction=direction,
            site_id=site,
            confidence=None if conf is None else float(conf),
            image_ref=image,
            offset_s=float(offset),
        )
        for cam, seen_at, p, color, direction, site, conf, image, offset in cur.fetchall()
    ]
    cur.execute(_TERMINALS, {"truck": truck, "since": since, "until": until})
    terminals = [
        Terminal(device_id=d, valid_from=f, valid_to=t, model=m) for d, f, t, m in cur.fetchall()
    ]

    rule = _rule(kind)
    speeds = [f.speed for f in fixes if f.in_episode and f.speed is not None]
    evidence = Evidence(
        final=final,
        captured_at=now,
        timezone=str(settings.city["timezone"]),
        facts=Facts(
            violation_id=vid,
            kind=kind,
            stream=stream,
            truck_id=truck,
            plate=plate,
            company=company,
            credit_code=credit,
            started_at=start,
            ended_at=end,
            lat=lat,
            lon=lon,
            zone_code=zone_code,
            permit_no=permit_no,
            district_code=district,
            detected_at=detected,
        ),
        window_from=since,
        window_to=until,
        truncated=truncated,
        fixes=fixes,
        zones=zones,
        permits=permits,
        sightings=sightings,
        terminals=terminals,
        rule=RuleInForce(
            kind=kind,
            label_zh=(rule.label.get("zh", kind) if rule else kind),
            label_en=(rule.label.get("en", kind) if rule else kind),
            section=rule.section if rule else "",
            table=dict(rule.spec_in(settings)) if rule else {},
            thresholds=params or {},
            legal_basis=basis or "",
        ),
        measured=Measured(
            worst_value=worst,
            unit=unit or "",
            duration_s=None if end is None else (end - start).total_seconds(),
            severity=severity,
            points=points,
            max_speed_kmh=max(speeds) if speeds else None,
        ),
    )
    return evidence, status


def _store(cur, violation_id: int, evidence: Evidence, settings: Any, now) -> Record:
    """Write the evidence: replace the provisional record, or start a new version."""
    text = canonical(evidence)
    digest = sha256(text)
    facts = evidence.facts
    due = None if evidence.final else final_due(settings, facts.ended_at)
    current = current_record(cur, violation_id)
    values = {
        "v": violation_id,
        "final": evidence.final,
        "at": now,
        "due": due,
        "start": facts.started_at,
        "end": facts.ended_at,
        "fixes": len(evidence.fixes),
        "content": text,
        "sha": digest,
    }
    if current is not None and not current.final:
        cur.execute(
            """UPDATE evidence_records SET final = %(final)s, captured_at = %(at)s,
                   final_due_at = %(due)s, started_at = %(start)s, ended_at = %(end)s,
                   fixes = %(fixes)s, content = %(content)s, sha256 = %(sha)s
               WHERE id = %(id)s RETURNING id""",
            {**values, "id": current.id},
        )
        version = current.version
    else:
        if current is not None:
            cur.execute(
                "UPDATE evidence_records SET superseded_at = %s WHERE id = %s", (now, current.id)
            )
        version = current.version + 1 if current else 1
        cur.execute(
            """INSERT INTO evidence_records (violation_id, version, final, captured_at,
                   final_due_at, started_at, ended_at, fixes, content, sha256)
               VALUES (%(v)s, %(version)s, %(final)s, %(at)s, %(due)s, %(start)s, %(end)s,
                       %(fixes)s, %(content)s, %(sha)s) RETURNING id""",
            {**values, "version": version},
        )
    record_id = cur.fetchone()[0]
    record = Record(
        record_id, violation_id, version, evidence.final, now, due, len(evidence.fixes),
        text, digest, None,
    )  # fmt: skip
    audit(
        cur,
        "finalise" if evidence.final else "capture",
        "system",
        violation_id,
        record,
        {"version": version, "final": evidence.final, "fixes": len(evidence.fixes)},
    )
    return record


def capture_one(conn, settings: Any, violation_id: int, now: dt.datetime | None = None) -> str:
    """Capture one queued violation now. Returns what happened: 'final' or 'provisional' (a
    record written), 'unchanged' (its final record still matches), 'gone' (withdrawn or
    deleted) or 'busy' (another collector has it). The violation stays queued after
    'provisional' (and 'busy'), and leaves the queue otherwise."""
    now = (now or dt.datetime.now(dt.UTC)).replace(microsecond=0)
    with transaction(conn) as cur:
        cur.execute(
            "SELECT 1 FROM evidence_pending WHERE violation_id = %s FOR UPDATE SKIP LOCKED",
            (violation_id,),
        )
        if cur.fetchone() is None:
            return "busy"
        current = current_record(cur, violation_id)
        built = build(cur, settings, violation_id, now)
        if built is None or built[1] == "withdrawn":
            outcome = "gone"
        else:
            evidence, _status = built
            facts = evidence.facts
            episode = (ms_time(facts.started_at), facts.ended_at and ms_time(facts.ended_at))
            if (
                current is not None
                and current.final
                and episode
                == (
                    current.evidence.facts.started_at,
                    current.evidence.facts.ended_at,
                )
            ):
                outcome = "unchanged"  # reviewed, say: a final record that matches stays
            else:
                _store(cur, violation_id, evidence, settings, now)
                outcome = "final" if evidence.final else "provisional"
        if outcome != "provisional":
            cur.execute("DELETE FROM evidence_pending WHERE violation_id = %s", (violation_id,))
        return outcome


class CaptureJob:
    """The clock job: queue what changed, then capture what is due (see the module doc)."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def queue(self, conn) -> int:
        """Queue the violations changed since the cursor; returns how many were new."""
        with transaction(conn) as cur:
            cur.execute(_QUEUE, {"overlap": OVERLAP_S, "limit": QUEUE_BATCH})
            newest, n = cur.fetchone()
            if newest is not None:
                cur.execute(
                    """INSERT INTO evidence_cursor (id, updated_at) VALUES (1, %s)
                       ON CONFLICT (id) DO UPDATE
                       SET updated_at = GREATEST(evidence_cursor.updated_at, EXCLUDED.updated_at)""",
                    (newest,),
                )
        return n

    def due(self, conn) -> list[int]:
        """Queued violations to capture now: never captured, changed since (ended, revised,
        withdrawn), due to become final, or provisional and older than `refresh_s`. New
        violations and final evidence first, newest first: a backlog of old violations (the
        first runs after an upgrade) never holds up today's."""
        cfg = self.settings["evidence"]
        with transaction(conn) as cur:
            cur.execute(
                """SELECT p.violation_id FROM evidence_pending p
                   JOIN violations v ON v.id = p.violation_id
                   LEFT JOIN evidence_records r
                     ON r.violation_id = p.violation_id AND r.superseded_at IS NULL
                   WHERE r.id IS NULL OR v.status = 'withdrawn'
                      OR r.started_at <> v.started_at
                      OR r.ended_at IS DISTINCT FROM v.ended_at
                      OR (NOT r.final AND (
                          v.ended_at + make_interval(secs => %(delay)s) <= now()
                          OR r.captured_at <= now() - make_interval(secs => %(refresh)s)))
                      OR r.final
                   ORDER BY CASE WHEN r.id IS NULL AND v.started_at > now() - interval '1 day'
                                 THEN 0  -- a new violation: its first evidence
                                 WHEN r.id IS NOT NULL AND NOT r.final
                                      AND v.ended_at + make_interval(secs => %(delay)s) <= now()
                                 THEN 1  -- due to become final
                                 WHEN r.id IS NULL THEN 3  -- a backlog after an upgrade
                                 ELSE 2 END,
                            p.violation_id DESC
                   LIMIT %(limit)s""",
                {
                    "delay": float(cfg["final_delay_s"]),
                    "refresh": float(cfg["refresh_s"]),
                    "limit": int(cfg["batch"]),
                },
            )
            return [row[0] for row in cur.fetchall()]

    def __call__(self, conn) -> int:
        """One run; returns how many records it wrote."""
        while self.queue(conn) == QUEUE_BATCH:
            pass  # a backlog (first run on an old database): each pass moves the cursor on
        outcomes = [capture_one(conn, self.settings, vid) for vid in self.due(conn)]
        return sum(o in ("final", "provisional") for o in outcomes)


def capture_job(settings: Any):
    """The job `muck collect` (and `muck demo`) runs: muck/jobs.py lists it."""
    from core.scheduling import Job

    return Job("evidence capture", CaptureJob(settings), float(settings["evidence"]["every_s"]))
