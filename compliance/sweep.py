"""The going-dark sweep: trucks that stopped reporting while operating are found on the clock,
not only when (if ever) their next fix arrives.

Runs every `compliance.dark_sweep_s` in the collector. A truck whose last fix is older than
`thresholds.dark_after_s` and was operating then (ignition on, moving or loaded, as its
last fix says) gets an ongoing `going_dark` violation starting at that fix, with the
minutes dark so far as its worst value. When the truck reports again, the going-dark rule
finds the same gap (same start) and closes that violation; if a re-upload fills the gap,
the replay withdraws it.
"""

from __future__ import annotations

import json
from typing import Any

from compliance.rules.dark import GoingDark

_SWEEP = """
INSERT INTO violations AS v (truck_id, company_id, kind, stream, started_at, worst_value,
    worst_unit, severity, lat, lon, points, legal_basis, rule_params)
SELECT s.truck_id, t.company_id, 'going_dark', 'gap', s.fix_time,
       extract(epoch FROM (%(now)s - s.fix_time)) / 60.0, 'min',
       CASE WHEN extract(epoch FROM (%(now)s - s.fix_time)) >= %(serious)s
            THEN 'serious' ELSE 'minor' END,
       s.lat, s.lon, %(points)s, %(basis)s, %(params)s::jsonb
FROM truck_state s JOIN trucks t ON t.id = s.truck_id
WHERE s.fix_time < %(now)s - make_interval(secs => %(dark)s)
  AND s.fix_time > %(now)s - make_interval(days => %(horizon)s)
  AND (s.load IN ('half', 'full') OR s.speed_kmh >= %(moving)s OR s.acc)
ON CONFLICT (truck_id, kind, stream, started_at) DO UPDATE SET
    worst_value = EXCLUDED.worst_value, severity = EXCLUDED.severity, updated_at = now()
WHERE v.ended_at IS NULL AND v.status <> 'withdrawn'
RETURNING id, (xmax = 0) AS inserted
"""


def sweep_dark(conn, settings: Any, now) -> list[int]:
    """Open or extend going-dark violations; returns the ids newly opened. Commits."""
    rule = GoingDark(settings["rules"]["going_dark"], settings)
    with conn.cursor() as cur:
        # One sweep at a time across collectors.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x6461726B,))
        cur.execute(
            _SWEEP,
            {
                "now": now,
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
