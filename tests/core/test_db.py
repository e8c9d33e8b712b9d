"""core.db helpers against the real PostgreSQL."""

import numpy as np
import pytest

from core.db import IntArray


def test_int_array_is_one_bigint_array_parameter(db):
    with db.cursor() as cur:
        cur.execute(
            "SELECT %s, 7 = ANY(%s), cardinality(%s)",
            (IntArray([3, 1, 2]), IntArray(np.array([7, 8], np.int64)), IntArray([])),
        )
        values, found, empty = cur.fetchone()
    assert values == [3, 1, 2]
    assert found is True
    assert empty == 0


def test_int_array_refuses_anything_but_integers(db):
    with db.cursor() as cur, pytest.raises(ValueError):
        cur.execute("SELECT %s", (IntArray(["1}'; SELECT 1; --"]),))
