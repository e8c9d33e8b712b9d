"""The vectorised permit lookup answers exactly what the per-permit methods answer."""

from __future__ import annotations

import datetime as dt

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geofence.index import GeofenceIndex
from geofence.model import Zone
from geofence.timewin import LocalClock, window_bitmap
from permits.catalog import Permit
from permits.lookup import PermitColumn, PermitLookup

CLOCK = LocalClock("Asia/Shanghai")
DAY0 = dt.date(2026, 3, 1)
HOURS = [
    (),
    ({"days": "daily", "start": "21:00", "end": "04:00"},),
    ({"days": "weekdays", "start": "09:00", "end": "17:00"},),
]


def _square(code: str, kind: str, lon: float) -> Zone:
    ring = [[lon, 22.5], [lon + 0.01, 22.5], [lon + 0.01, 22.51], [lon, 22.51], [lon, 22.5]]
    return Zone(code, kind, code, {"type": "Polygon", "coordinates": [ring]})


INDEX = GeofenceIndex(
    [_square(f"S{i}", "site", 114.0 + i * 0.02) for i in range(3)]
    + [_square(f"D{i}", "disposal", 114.1 + i * 0.02) for i in range(3)]
)


def _permit(pid: int, spec) -> Permit:
    trucks, first_day, days, status, hours, origin, disposal = spec
    valid_from = DAY0 + dt.timedelta(days=first_day)
    valid_to = valid_from + dt.timedelta(days=days)
    return Permit(
        id=pid,
        number=f"P{pid}",
        company_id=1,
        truck_ids=frozenset(trucks),
        origin_site=f"S{origin}",
        disposal_sites=tuple(f"D{d}" for d in disposal),
        routes=(),
        operating_hours=HOURS[hours],
        valid_from=valid_from,
        valid_to=valid_to,
        status=status,
        authority=None,
        start_s=CLOCK.local_midnight(valid_from),
        end_s=CLOCK.local_midnight(valid_to + dt.timedelta(days=1)),
        _clock=CLOCK,
        _hours=window_bitmap(list(HOURS[hours])) if HOURS[hours] else None,
    )


permit_specs = st.lists(
    st.tuples(
        st.sets(st.integers(1, 4), min_size=1, max_size=3),  # trucks
        st.integers(0, 6),  # first day
        st.integers(0, 4),  # days
        st.sampled_from(["active", "active", "suspended", "revoked"]),
        st.integers(0, len(HOURS) - 1),
        st.integers(0, 3),  # origin site (S3 does not exist)
        st.sets(st.integers(0, 3), max_size=2),  # approved disposal sites
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(permit_specs, st.integers(0, 2**32 - 1))
def test_lookup_equals_the_per_permit_answers(specs, seed):
    permits = [_permit(i + 1, spec) for i, spec in enumerate(specs)]
    lookup = PermitLookup(permits, CLOCK)
    rng = np.random.default_rng(seed)
    n = 60
    trucks = rng.integers(0, 6, n)
    t = CLOCK.local_midnight(DAY0) + rng.uniform(-86_400, 12 * 86_400, n)
    site = rng.integers(-1, 3, n)  # zone indexes 0-2 are S0-S2
    disposal = np.where(rng.random(n) < 0.5, rng.integers(3, 6, n), -1)  # D0-D2
    found = lookup.at_fixes(trucks, t, index=INDEX, site=site, disposal=disposal)
    column = PermitColumn(lookup.permits, found.position)
    # Precedence of PermitCatalog.by_truck: newest valid_from first, then highest id.
    ordered = sorted(permits, key=lambda p: (p.valid_from, p.id), reverse=True)
    for i in range(n):
        valid = [p for p in ordered if int(trucks[i]) in p.truck_ids and p.valid_at(t[i])]
        expected = valid[0] if valid else None
        assert column[i] is expected
        if expected is None:
            assert found.operating[i]
            assert not found.approved_disposal[i] and not found.origin_site[i]
            continue
        assert found.operating[i] == expected.operating_at(t[i])
        code = INDEX.codes[disposal[i]] if disposal[i] >= 0 else None
        assert found.approved_disposal[i] == (code in expected.disposal_sites)
        site_code = INDEX.codes[site[i]] if site[i] >= 0 else None
        assert found.origin_site[i] == (site_code == expected.origin_site)


def test_zone_tables_follow_a_new_geofence_index():
    permit = _permit(1, ({1}, 0, 3, "active", 0, 0, {1}))
    lookup = PermitLookup([permit], CLOCK)
    t = np.array([CLOCK.local_midnight(DAY0) + 3600.0])
    one = np.array([1])

    def at(index, site_code: str, disposal_code: str):
        return lookup.at_fixes(
            one,
            t,
            index=index,
            site=np.array([index.zone_index(site_code)]),
            disposal=np.array([index.zone_index(disposal_code)]),
        )

    assert at(INDEX, "S0", "D1").origin_site[0] and at(INDEX, "S0", "D1").approved_disposal[0]
    assert not at(INDEX, "S1", "D0").origin_site[0]
    # The same codes at other positions in a reloaded index: the answer follows the codes.
    moved = GeofenceIndex([_square("D1", "disposal", 114.1), _square("S0", "site", 114.0)])
    assert INDEX.zone_index("S0") != moved.zone_index("S0") or INDEX.zone_index(
        "D1"
    ) != moved.zone_index("D1")
    again = at(moved, "S0", "D1")
    assert again.origin_site[0] and again.approved_disposal[0]
