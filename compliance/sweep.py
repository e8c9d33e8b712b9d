"""The going-dark sweep: trucks that stopped reporting while working are found on the clock,
not only when (if ever) their next fix arrives.

Runs every `compliance.dark_sweep_s` in the collector. A truck whose last fix is older than
`thresholds.dark_after_s` and was working then (moving, loaded or ignition on, as its last
fix says: `compliance_working()`, the SQL twin of compliance.frame.is_working) gets an
ongoing `going_dark` violation starting at that fix, with the minutes dark so far as its
worst value. When the truck reports again, the going-dark rule finds the same gap (same
start) and closes that violation; if a re-upload fills the gap, the replay withdraws it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

from compliance.dark_excuses import CLOCK_SLACK_S
from compliance.rules.dark import GoingDark
from telemetry.validation import parse_time_ms

# The dark class of each silent truck's last fix (compliance.rules.dark.dark_class) is in its
# rule state when it is not WORKING (3); the fairness rules of the module docstring of
# compliance/rules/dark.py, in SQL: ACC off and stopped (1) is never dark; an orderly
# shutdown after the last fix excuses all but a load outside the sites (0); an empty truck
# parked in a site (2) is a notice.
_SWEEP = """
WITH silent AS (
    SELECT s.*, COALESCE((s.rule_state::jsonb -> 'kept' ->> 'dark_class')::float8, 3) AS cls,
           d.orderly_offline_at
    FROM truck_state s LEFT JOIN device_status d ON d.device_id = s.device_id
    WHERE s.fix_time < %(now)s - make_interval(secs => %(dark)s)
      AND s.fix_time > %(now)s - make_interval(days => %(horizon)s)
      AND compliance_working(s.load, s.speed_kmh, s.acc, %(moving)s)
      -- heard from lately (on the wall clock): a back-fill is still arriving, and its newest
      -- fix is not where the truck fell silent
      AND s.received_at < %(heard)s
)
INSERT INTO violations AS v (truck_id, company_id, kind, stream, started_at, worst_value,
    worst_unit, severity, lat, lon, points, legal_basis, rule_params)
SELECT s.truck_id, t.company_id, 'going_dark', 'gap', s.fix_time,
       extract(epoch FROM (%(now)s - s.fix_time)) / 60.0, 'min',
       CASE WHEN s.cls = 2 THEN 'notice'
            WHEN extract(epoch FROM (%(now)s - s.fix_time)) >= %(serious)s
            THEN 'serious' ELSE 'minor' END,
       s.lat, s.lon, %(points)s, %(basis)s, %(params)s::jsonb
FROM silent s JOIN trucks t ON t.id = s.truck_id
WHERE s.cls <> 1
  AND NOT (s.cls <> 0 AND s.orderly_offline_at IS NOT NULL
           AND s.orderly_offline_at >= s.fix_time - make_interval(secs => %(slack)s)
           AND s.orderly_offline_at <= %(now)s)
ON CONFLICT (truck_id, kind, stream, started_at) DO UPDATE SET
    worst_value = EXCLUDED.worst_value, severity = EXCLUDED.severity, updated_at = now()
WHERE v.ended_at IS NULL AND v.status <> 'withdrawn'
RETURNING id, (xmax = 0) AS inserted
"""


def sweep_dark(conn, settings: Any, now, heard_before=None) -> list[int]:
    """Open or extend going-dark violations of trucks silent at `now`; returns the ids newly
    opened. Commits. `heard_before`: skip trucks whose newest fix was received at or after it
    (the collector passes wall-clock now - dark_after_s, so a truck still back-filling is
    not judged); None judges on device time alone (a replay of a past window)."""
    rule = GoingDark.from_settings(settings)
    with conn.cursor() as cur:
        # One sweep at a time across collectors.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x6461726B,))
        cur.execute(
            _SWEEP,
            {
                "now": now,
                "heard": heard_before if heard_before is not None else "infinity",
                "slack": CLOCK_SLACK_S,
                "dark": rule.dark_after_s,
                "moving": float(settings["compliance"]["moving_kmh"]),
                "serious": rule.serious_after_s,
                "horizon": int(settings.ingest["past_horizon_days"]),
                "points": rule.points,
                "basis": rule.legal_basis,
                "params": json.dumps(rule.parameters(), ensure_ascii=False),
            },
        )
        opened = [vid for vid, inserted in cur.fetchall() if inserted]
        if opened:
            cur.execute(
                """INSERT INTO violation_events (violation_id, actor, action, note)
                   SELECT unnest(%s::bigint[]), 'system', 'detected', 'no report since'""",
                (opened,),
            )
    conn.commit()
    return opened


_JUMP_DETAIL = re.compile(r"\((\d+(?:\.\d+)?) km/h\)")


def sweep_jumps(conn, settings: Any, limit: int = 5000) -> list[int]:
    """Turn fixes quarantined as `implied_speed` (a jump no truck can drive: a shielded or
    spoofed GNSS) into `going_dark` violations of stream `jump`, for registered trucks.
    Reads the quarantine incrementally; commits. Returns the ids of new violations."""
    rule = GoingDark.from_settings(settings)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x6A756D70,))
        cur.execute("SELECT last_id FROM compliance_cursors WHERE name = 'jumps'")
        row = cur.fetchone()
        last_id = row[0] if row else 0
        cur.execute(
            """SELECT id, device_id, detail, payload FROM quarantine
               WHERE id > %s AND reason = 'implied_speed' ORDER BY id LIMIT %s""",
            (last_id, limit),
        )
        rows = cur.fetchall()
        found = []
        for qid, device, detail, payload in rows:
            last_id = qid
            try:
                fix = msgspec.json.decode(bytes(payload))
                ts = parse_time_ms(fix["ts"]) / 1000.0
                lat, lon = float(fix["lat"]), float(fix["lon"])
            except (msgspec.DecodeError, KeyError, TypeError, ValueError):
                continue  # a truncated payload: the quarantine row itself is the record
            match = _JUMP_DETAIL.search(detail or "")
            found.append((device, ts, lat, lon, float(match.group(1)) if match else None))
        opened: list[int] = []
        if found:
            cur.execute(
                """INSERT INTO violations AS v (truck_id, company_id, kind, stream, started_at,
                       ended_at, worst_value, worst_unit, severity, lat, lon, points,
                       legal_basis, rule_params)
                   SELECT t.truck_id, k.company_id, 'going_dark', 'jump', to_timestamp(f.ts),
                          to_timestamp(f.ts), f.kmh, 'km/h implied', 'serious', f.lat, f.lon,
                          %s, %s, %s::jsonb
                   FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::float8[],
                               %s::float8[]) AS f(device, ts, lat, lon, kmh)
                   JOIN terminals t ON t.device_id = f.device
                        AND t.valid_from <= to_timestamp(f.ts)
                        AND (t.valid_to IS NULL OR t.valid_to > to_timestamp(f.ts))
                   JOIN trucks k ON k.id = t.truck_id
                   ON CONFLICT (truck_id, kind, stream, started_at) DO NOTHING
                   RETURNING id""",
                (
                    rule.points,
                    rule.legal_basis,
                    json.dumps({"max_implied_speed_kmh": settings.ingest["max_implied_speed_kmh"]}),
                    [f[0] for f in found],
                    [f[1] for f in found],
                    [f[2] for f in found],
                    [f[3] for f in found],
                    [f[4] for f in found],
                ),
            )
            opened = [r[0] for r in cur.fetchall()]
            if opened:
                cur.execute(
                    """INSERT INTO violation_events (violation_id, actor, action, note)
                       SELECT unnest(%s::bigint[]), 'system', 'detected',
                              'position jump no truck can drive (quarantined fix)'""",
                    (opened,),
                )
        cur.execute(
            """INSERT INTO compliance_cursors (name, last_id) VALUES ('jumps', %s)
               ON CONFLICT (name) DO UPDATE SET last_id = EXCLUDED.last_id""",
            (last_id,),
        )
    conn.commit()
    return opened


# An open going-dark gap whose truck has a stored fix within the dark threshold after its
# start was never a silence: a terminal's back-fill (盲区补传) arrived after the sweep opened
# it, with fixes newer than its checkpoint, so no replay revisits it and the rule, seeing
# no gap, never closes it.
#
# Two statements because the engine asks after every batch: the first reads violations
# only and finds, nearly always, nothing; the second looks into positions for the few
# gaps found. As one statement, planning it over every daily partition of positions cost
# about 8 ms a batch, whatever the answer.
_OPEN_GAPS = """
SELECT v.id FROM violations v
WHERE v.kind = 'going_dark' AND v.stream = 'gap' AND v.ended_at IS NULL
  AND v.status <> 'withdrawn'
  AND (%(trucks)s::bigint[] IS NULL OR v.truck_id = ANY(%(trucks)s::bigint[]))
"""
_STALE = """
SELECT v.id, v.status FROM violations v
WHERE v.id = ANY(%(ids)s::bigint[])
  AND EXISTS (SELECT 1 FROM positions p
              WHERE p.truck_id = v.truck_id AND p.fix_time > v.started_at
                AND p.fix_time <= v.started_at + make_interval(secs => %(dark)s))
"""


def withdraw_stale_dark(cur, settings: Any, trucks: list[int] | None = None) -> list[int]:
    """Withdraw open going-dark gaps that stored fixes show were no silence (of `trucks`, or
    of every truck); returns their ids. Works in the caller's transaction."""
    from compliance.violations import ViolationWriter

    cur.execute(_OPEN_GAPS, {"trucks": trucks})
    open_gaps = [row[0] for row in cur.fetchall()]
    if not open_gaps:
        return []
    cur.execute(_STALE, {"ids": open_gaps, "dark": float(settings.thresholds["dark_after_s"])})
    rows = cur.fetchall()
    writer = ViolationWriter(settings)
    for vid, status in rows:
        writer._withdraw(cur, vid, status, "back-filled fixes show the truck was not silent")
    return [vid for vid, _ in rows]


def sweep_until(conn, settings: Any, until) -> dict[str, int]:
    """The going-dark and jump sweeps for a past window ending at `until`, on device time
    (`muck sweep --until`): after a day of history was imported or back-filled. Stale open
    gaps are withdrawn first; trucks with fixes after `until` are not judged (the rule judged
    their gaps from the fixes). Commits."""
    with conn.cursor() as cur:
        stale = withdraw_stale_dark(cur, settings)
    conn.commit()
    opened = sweep_dark(conn, settings, until)
    jumps = sweep_jumps(conn, settings)
    return {"withdrawn": len(stale), "opened": len(opened), "jumps": len(jumps)}
