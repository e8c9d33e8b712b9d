""" "Working" (moving, loaded or ignition on) has one definition in Python
(compliance.frame.is_working) and its SQL twin for the going-dark sweep
(compliance_working(), compliance/sql/0008_working.sql): both answer alike for every input."""

from __future__ import annotations

import itertools

import numpy as np

from compliance.frame import is_working

MOVING_KMH = 5.0
LOADS = (None, "empty", "half", "full")
SPEEDS = (None, 0.0, 4.9, 5.0, 80.0)
IGNITION = (None, False, True)


def test_sql_and_python_agree_on_working(db):
    cases = list(itertools.product(LOADS, SPEEDS, IGNITION))
    with db.cursor() as cur:
        cur.execute(
            """SELECT coalesce(compliance_working(l::load_state, s::real, a, %s), false)
               FROM unnest(%s::text[], %s::float8[], %s::boolean[]) WITH ORDINALITY
                    AS c(l, s, a, i)
               ORDER BY i""",
            (MOVING_KMH, *(list(column) for column in zip(*cases, strict=True))),
        )
        in_sql = [row[0] for row in cur.fetchall()]
    db.commit()
    loads, speeds, ignition = zip(*cases, strict=True)
    in_python = is_working(
        np.array(speeds, float),  # None becomes NaN: an unknown speed is not moving
        np.isin(np.array(loads, object), ("half", "full")),
        np.equal(ignition, True),
        MOVING_KMH,
    )
    assert in_sql == in_python.tolist()
    assert any(in_sql) and not all(in_sql)
