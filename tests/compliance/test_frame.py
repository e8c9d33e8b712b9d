"""The rules' fix columns are the same whether built from stored rows or from fixes."""

from __future__ import annotations

import numpy as np

from compliance.frame import FixColumns
from telemetry.validation import Fix


def _fix(k: int, **kw) -> Fix:
    values = dict(
        device_id=f"D{k}",
        fix_ms=1_795_000_000_123 + k * 10_001,
        lat=22.5 + k * 1e-4,
        lon=114.0 - k * 1e-4,
        speed=None if k % 5 == 0 else 10.0 + k,
        heading=None,
        alt=None,
        lid=("open", "closed", None)[k % 3],
        lift=("up", "down", None)[k % 3],
        load=("empty", "half", "full", None)[k % 4],
        weight_kg=None,
        acc=(True, False, None)[k % 3],
        alarms=(None, [], ["antenna_cut"], ["overspeed"], ["power_cut", "x"])[k % 5],
        sats=None,
        hdop=None,
        seq=None,
        raw=b"{}",
    )
    values.update(kw)
    return Fix(**values)


def test_columns_from_fixes_equal_columns_from_rows():
    fixes = [_fix(k) for k in range(40)]
    trucks = [100 + k % 7 for k in range(40)]
    rows = [
        (t, f.fix_ms / 1000.0, f.lon, f.lat, f.speed, f.lid, f.lift, f.load, f.acc, f.alarms)
        for f, t in zip(fixes, trucks, strict=True)
    ]
    direct, stored = FixColumns.from_fixes(fixes, trucks), FixColumns.from_rows(rows)
    for field in FixColumns.__dataclass_fields__:
        a, b = getattr(direct, field), getattr(stored, field)
        assert a.dtype == b.dtype, field
        np.testing.assert_array_equal(a, b, err_msg=field)
    assert direct.alarm.sum() == 16  # antenna_cut and power_cut count, overspeed does not
