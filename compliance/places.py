"""Violations opened without a position get the first fix of their episode.

A rule that knows no position when it opens a violation leaves `lat`/`lon` NULL; the
district trigger (compliance/sql/0010) needs them, and so do the list's district filter and
the map. Until issue 13 the evidence copy filled them in; evidence now lives in its own
package and writes no compliance table, so this clock job does it (off the ingestion path).
"""

from __future__ import annotations

from core.db import transaction

_FILL = """
UPDATE violations v SET lat = f.lat, lon = f.lon
FROM (
    SELECT w.id, p.lat, p.lon
    FROM (SELECT id, truck_id, started_at FROM violations
          WHERE (lat IS NULL OR lon IS NULL) AND status <> 'withdrawn'
          ORDER BY id DESC LIMIT %(limit)s) w
    CROSS JOIN LATERAL (
        SELECT lat, lon FROM positions p
        WHERE p.truck_id = w.truck_id AND p.fix_time >= w.started_at
        ORDER BY p.fix_time LIMIT 1
    ) p
) f
WHERE v.id = f.id
"""


def fill_missing_places(conn, limit: int = 500) -> int:
    """Set the position of violations without one from their first fix; returns how many.
    Newest first: one that never gets a fix (dark to the end) does not hold up the others."""
    with transaction(conn) as cur:
        cur.execute(_FILL, {"limit": limit})
        return cur.rowcount
