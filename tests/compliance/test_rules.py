"""One scenario per rule, with 10-20 m GPS noise, on both sides of its threshold: the
violation appears exactly once when it should, and never when it should not."""

from __future__ import annotations

import pytest

from tests.compliance.city import (
    EMPTY,
    LOADED,
    Pipeline,
    Trace,
    build_city,
    kinds,
    normal_trip,
    violations,
)


@pytest.fixture
def city(db, settings):
    return build_city(db, settings)


def run(db, settings, *traces: Trace) -> list[str]:
    pipeline = Pipeline(settings, db)
    messages = []
    for trace in traces:
        messages += trace.messages()
    messages.sort(key=lambda m: m.payload)  # interleave nothing special; order by content
    pipeline.feed(sorted(messages, key=_ts))
    return kinds(db)


def _ts(message) -> int:
    import msgspec

    return msgspec.json.decode(message.payload)["ts"]


def test_a_normal_trip_raises_nothing(db, settings, city):
    assert run(db, settings, normal_trip(Trace("T1", city.base_ms))) == []


@pytest.mark.parametrize(
    ("kmh", "seconds", "expected"),
    [(55, 120, ["speeding"]), (43, 300, []), (55, 20, [])],
    ids=["over-long", "within-tolerance", "too-short"],
)
def test_speeding(db, settings, city, kmh, seconds, expected):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED)
    trace.drive(1000, 0, 35, **LOADED)
    trace.drive(1000 + kmh / 3.6 * seconds, 0, kmh, **LOADED)
    trace.drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == expected


def test_speed_zone_limit_applies(db, settings, city):
    trace = Trace("T1", city.base_ms, x=1800, y=-2000).dwell(30, **EMPTY)
    trace.drive(3200, -2000, 38, **EMPTY)  # 38 km/h: fine on other roads, over 30 here
    assert run(db, settings, trace) == ["speeding"]


@pytest.mark.parametrize(
    ("lid_seconds", "in_site", "expected"),
    [(180, False, ["unsealed_transport"]), (40, False, []), (180, True, [])],
    ids=["open-in-transit", "too-short", "inside-site"],
)
def test_unsealed_transport(db, settings, city, lid_seconds, in_site, expected):
    opened = {"load": "full", "lid": "open", "lift": "down"}
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED)
    if in_site:  # still covering the load while manoeuvring inside the site
        trace.drive(80, 80, 8, **opened).drive(-80, 80, 8, **opened).drive(0, 0, 8, **LOADED)
        trace.drive(4950, 0, 35, **LOADED)
    else:
        trace.drive(1000, 0, 35, **LOADED)
        trace.drive(1000 + 35 / 3.6 * lid_seconds, 0, 35, **opened)
        trace.drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == expected


@pytest.mark.parametrize(
    ("offset_m", "expected"), [(160, ["route_deviation"]), (20, [])], ids=["off", "inside-corridor"]
)
def test_route_deviation(db, settings, city, offset_m, expected):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED)
    trace.drive(1000, 0, 35, **LOADED).drive(1000, offset_m, 20, **LOADED)
    trace.drive(3500, offset_m, 35, **LOADED).drive(3500, 0, 20, **LOADED)
    trace.drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == expected
    if expected:
        (row,) = violations(db)
        assert 130 <= float(row[5]) <= 200  # worst metres off route


def unload_at(trace: Trace, x: float, y: float) -> Trace:
    """Unload at (x, y) on the way along the approved route, then drive on empty."""
    trace.drive(x, y, 30, **LOADED).dwell(30, **LOADED)
    trace.dwell(60, load="full", lid="open", lift="up").dwell(30, **EMPTY)
    return trace.drive(4950, 0, 30, **EMPTY)


@pytest.mark.parametrize(
    ("where", "expected"),
    [((2500, 20), ["illegal_dumping"]), ((5000, 0), []), ((3500, 0), ["unapproved_disposal"])],
    ids=["outside-sites", "approved-site", "other-disposal-site"],
)
def test_dumping_and_unapproved_disposal(db, settings, city, where, expected):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(1000, 0, 35, **LOADED)
    assert run(db, settings, unload_at(trace, *where)) == expected


def test_load_drop_without_lift_sensor_outside_sites_is_dumping(db, settings, city):
    trace = Trace("T1", city.base_ms).dwell(180, load="full").drive(2500, 0, 35, load="full")
    trace.dwell(60, load="full").dwell(60, load="empty").drive(4950, 0, 30, load="empty")
    assert run(db, settings, trace) == ["illegal_dumping"]


@pytest.mark.parametrize(
    ("y", "expected"), [(2000, ["restricted_zone"]), (1640, [])], ids=["through", "skirting"]
)
def test_restricted_zone(db, settings, city, y, expected):
    trace = Trace("T1", city.base_ms, x=1800, y=y).dwell(30, **EMPTY)
    trace.drive(3200, y, 30, **EMPTY)  # 300 m half-width: the zone edge is at y = 1700
    assert run(db, settings, trace) == expected


def test_restricted_hours(db, settings):
    import datetime as dt

    now = dt.datetime.now().astimezone()
    # Operating hours that exclude the scenario (which runs 4 h ago, for about 30 min).
    start = (now - dt.timedelta(hours=12)).strftime("%H:00")
    end = (now - dt.timedelta(hours=10)).strftime("%H:00")
    city = build_city(db, settings, hours=[{"start": start, "end": end}])
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["restricted_hours"]


def test_restricted_hours_is_one_violation_across_stops(db, settings):
    """Out of hours in stretches of ~2.5 min between stops at lights: still one transport,
    one violation (each stretch alone is under the 5 min minimum)."""
    import datetime as dt

    now = dt.datetime.now().astimezone()
    start = (now - dt.timedelta(hours=12)).strftime("%H:00")
    end = (now - dt.timedelta(hours=10)).strftime("%H:00")
    city = build_city(db, settings, hours=[{"start": start, "end": end}])
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED)
    for x in (1500, 3000, 4500):
        trace.drive(x, 0, 35, **LOADED).dwell(50, **LOADED)
    trace.drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["restricted_hours"]


@pytest.mark.parametrize(
    ("gap_s", "expected"), [(600, ["going_dark"]), (120, [])], ids=["dark", "short-gap"]
)
def test_going_dark(db, settings, city, gap_s, expected):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(2000, 0, 35, **LOADED)
    trace.gap(gap_s).drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == expected
    if expected:
        (row,) = violations(db)
        assert 9.5 <= float(row[5]) <= 10.5  # minutes dark


def test_terminal_alarm_is_going_dark(db, settings, city):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(2000, 0, 35, **LOADED)
    trace.drive(2300, 0, 35, alarms=["antenna_cut"], **LOADED).drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["going_dark"]


@pytest.mark.parametrize(("device", "expected"), [("T2", ["no_valid_permit"]), ("T1", [])])
def test_no_valid_permit(db, settings, city, device, expected):
    trace = Trace(device, city.base_ms).dwell(180, **LOADED).drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == expected


def test_trips_are_recorded_with_origin_destination_and_distance(db, settings, city):
    trace = normal_trip(Trace("T1", city.base_ms))
    elsewhere = Trace("T1", trace.t_ms + 60_000, x=100, y=0)
    elsewhere.drive(0, 0, 10, **EMPTY).dwell(120, **LOADED).drive(2500, 0, 35, **LOADED)
    unload_at(elsewhere, 2500, 20)
    assert run(db, settings, trace, elsewhere) == ["illegal_dumping"]
    with db.cursor() as cur:
        cur.execute(
            """SELECT permit_no, origin_code, destination_code, status, distance_m,
                      extract(epoch FROM unloaded_at - loaded_at)
               FROM trips ORDER BY loaded_at"""
        )
        first, second = cur.fetchall()
    db.commit()
    assert first[:4] == ("深渣准〔2026〕0001号", "SITE-A", "DISP-B", "completed")
    assert 4700 <= first[4] <= 5300  # metres driven loaded from SITE-A to DISP-B
    assert second[1:4] == ("SITE-A", None, "unloaded_elsewhere")


def test_a_trip_loaded_too_long_is_recorded_as_abandoned(db, settings, city):
    """Loaded at SITE-A, then driving loaded for longer than abandon_trip_after_s without
    unloading: the trip ends as abandoned, once, with its origin; loading again at the
    site starts a new trip with that origin."""
    quick = settings.with_overrides(compliance={"abandon_trip_after_s": 600.0})
    trace = Trace("T1", city.base_ms).dwell(120, **EMPTY).dwell(120, **LOADED)
    trace.drive(4000, 0, 12, **LOADED)  # about 20 minutes loaded outside any site
    trace.dwell(60, **EMPTY)  # unloaded somewhere: no trip of its own
    trace.drive(0, 0, 12, **EMPTY).dwell(120, **LOADED)  # loaded again at SITE-A
    trace.drive(1000, 0, 12, **LOADED)
    pipeline = Pipeline(quick, db)
    messages = trace.messages()
    for k in range(0, len(messages), 7):  # in many batches, so the carry is crossed often
        pipeline.feed(messages[k : k + 7])
    with db.cursor() as cur:
        cur.execute(
            "SELECT origin_code, destination_code, status, unloaded_at FROM trips ORDER BY loaded_at"
        )
        rows = cur.fetchall()
    db.commit()
    assert rows == [("SITE-A", None, "abandoned", None)]
    # The second load is still under way: recorded when it ends, not before.


def test_dark_sweep_opens_a_violation_that_the_next_fix_closes(db, settings, city):
    import datetime as dt

    from compliance.sweep import sweep_dark

    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(2000, 0, 35, **LOADED)
    pipeline = Pipeline(settings, db)
    pipeline.feed(trace.messages())
    last_fix = trace.t_ms / 1000 - trace.interval_s
    now = dt.datetime.fromtimestamp(last_fix + 900, dt.UTC)
    opened = sweep_dark(db, settings, now)
    assert len(opened) == 1
    assert sweep_dark(db, settings, now + dt.timedelta(minutes=1)) == []  # extended, not new
    (row,) = violations(db)
    assert row[1:3] == ("going_dark", "gap") and row[4] is None and float(row[5]) >= 15.0
    # The truck reports again 20 minutes after its last fix: the same violation closes.
    trace.fixes.clear()
    trace.gap(1200 - trace.interval_s).drive(4950, 0, 35, **LOADED)
    pipeline.feed(trace.messages())
    (row,) = violations(db)
    assert row[1] == "going_dark" and row[4] is not None and 19.5 <= float(row[5]) <= 20.5


def test_rules_run_with_no_zones_and_no_permits(db, settings):
    """A city before its administrator has drawn anything: every registered truck carrying
    loads is without a permit, and nothing fails."""
    import datetime as dt

    from registry.service import bind_terminal, upsert_company, upsert_truck

    with db.cursor() as cur:
        truck = upsert_truck(cur, "粤B20001", upsert_company(cur, "空白城市公司", None))
        bind_terminal(cur, "BARE1", truck, dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
    db.commit()
    base = (int(dt.datetime.now(dt.UTC).timestamp()) - 3600) * 1000
    trace = Trace("BARE1", base).dwell(60, **LOADED).drive(3000, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["no_valid_permit"]


def test_a_position_jump_quarantined_at_ingestion_becomes_a_going_dark_violation(
    db, settings, city
):
    from compliance.sweep import sweep_jumps

    trace = Trace("T1", city.base_ms).dwell(60, **LOADED).drive(1000, 0, 35, **LOADED)
    trace.x, trace.y = 30_000, 0  # 29 km in 10 s: shielded or spoofed GNSS
    trace.dwell(10, **LOADED)
    Pipeline(settings, db).feed(trace.messages())
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM quarantine WHERE reason = 'implied_speed'")
        assert cur.fetchone()[0] == 1
    db.commit()
    assert len(sweep_jumps(db, settings)) == 1
    assert sweep_jumps(db, settings) == []  # the quarantine is read once
    (row,) = violations(db)
    assert row[1:3] == ("going_dark", "jump") and float(row[5]) > 1000


def test_unloading_while_dark_is_not_dumping_where_the_truck_reappears(db, settings, city):
    """Loaded, dark for 10 minutes, back empty: where it unloaded is unknown, so no dumping
    is claimed at the place it reappears; the going-dark violation is serious and says so."""
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(2000, 0, 35, **LOADED)
    trace.gap(600).drive(2500, 0, 35, **EMPTY).drive(4950, 0, 35, **EMPTY)
    assert run(db, settings, trace) == ["going_dark"]
    with db.cursor() as cur:
        cur.execute("SELECT severity, rule_params FROM violations")
        severity, params = cur.fetchone()
    db.commit()
    assert severity == "serious" and params["unloaded_while_dark"] is True


def test_going_dark_loaded_and_back_loaded_is_not_flagged(db, settings, city):
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(2000, 0, 35, **LOADED)
    trace.gap(400).drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["going_dark"]
    with db.cursor() as cur:
        cur.execute("SELECT severity, rule_params FROM violations")
        severity, params = cur.fetchone()
    db.commit()
    assert severity == "minor" and "unloaded_while_dark" not in params


def test_no_valid_permit_is_one_violation_across_stops(db, settings, city):
    """Stops at lights do not split a transport without a permit into several violations."""
    trace = Trace("T2", city.base_ms).dwell(180, **LOADED).drive(1500, 0, 35, **LOADED)
    trace.dwell(60, **LOADED).drive(3000, 0, 35, **LOADED).dwell(45, **LOADED)
    trace.drive(4950, 0, 35, **LOADED)
    assert run(db, settings, trace) == ["no_valid_permit"]
