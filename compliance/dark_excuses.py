"""Going-dark gaps that an orderly shutdown excuses.

The going-dark rule sees fixes only; whether the terminal said, itself, that it was going
offline is telemetry's `device_status.orderly_offline_at` (an `offline` status with the
terminal's own time and a shutdown reason; a last will does not count). A gap that began at or before that
moment and ended after it is left out, unless the rule marked it as not excusable (loaded
outside every site, or unloaded while dark). The sweep applies the same test in SQL
(compliance/sweep.py).

Only the latest orderly shutdown of each terminal is known, so in a replay of an old window
an earlier shutdown no longer excuses its gap: the replay errs towards reporting.
"""

from __future__ import annotations

import math
from collections import defaultdict

from compliance.violations import EpisodeRow

# An orderly `offline` stamped this much before the last fix still follows it (terminal
# clocks and fix times are not perfectly ordered).
CLOCK_SLACK_S = 5.0


def split_excused(cur, rows: list[EpisodeRow]) -> tuple[list[EpisodeRow], list[EpisodeRow]]:
    """(rows to store, going-dark gaps excused by an orderly shutdown)."""
    candidates = [r for r in rows if r.kind == "going_dark" and r.stream == "gap" and r.excusable]
    if not candidates:
        return rows, []
    cur.execute(
        """SELECT m.truck_id, extract(epoch FROM d.orderly_offline_at)::float8
           FROM terminals m JOIN device_status d ON d.device_id = m.device_id
           WHERE m.truck_id = ANY(%s) AND d.orderly_offline_at IS NOT NULL
             AND m.valid_from <= d.orderly_offline_at
             AND (m.valid_to IS NULL OR m.valid_to > d.orderly_offline_at)""",
        (sorted({r.truck_id for r in candidates}),),
    )
    offline: dict[int, list[float]] = defaultdict(list)
    for truck, at in cur.fetchall():
        offline[truck].append(at)
    excused = {
        id(r)
        for r in candidates
        if any(
            r.start - CLOCK_SLACK_S <= at < (r.end if r.end is not None else math.inf)
            for at in offline.get(r.truck_id, ())
        )
    }
    return [r for r in rows if id(r) not in excused], [r for r in rows if id(r) in excused]
