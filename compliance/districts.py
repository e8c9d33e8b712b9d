"""Violations raised before their district was known get it once the district is imported.

A violation takes its district (行政区划代码) from the boundaries in force when its position
is set (a trigger on `violations`, compliance/sql/0010). A city that imports its districts
after the first violations, or adds a district later, would leave those violations out of
every district filter; this fills them in. It runs on the scheduler and right after a
district upload in the dashboard, and does nothing while the districts are unchanged.
"""

from __future__ import annotations

from core.db import transaction
from geofence.store import districts_version

_CURSOR = "district_fill"


def fill_missing_districts(conn) -> int:
    """Set the district of violations that have none and lie in one; returns how many."""
    version = districts_version(conn)
    with transaction(conn) as cur:
        cur.execute("SELECT last_id FROM compliance_cursors WHERE name = %s", (_CURSOR,))
        row = cur.fetchone()
        if version == 0 or (row is not None and row[0] == version):
            return 0
        cur.execute(
            """UPDATE violations SET district_code = d.code
               FROM (SELECT id, geofence_district_at(lon, lat) AS code FROM violations
                     WHERE district_code IS NULL AND lat IS NOT NULL AND lon IS NOT NULL) d
               WHERE violations.id = d.id AND d.code IS NOT NULL"""
        )
        filled = cur.rowcount
        cur.execute(
            """INSERT INTO compliance_cursors (name, last_id) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET last_id = EXCLUDED.last_id""",
            (_CURSOR, version),
        )
    return filled
