"""Replaying a past day (`muck sweep --until`): going dark judged on device time, the stale
alerts a back-fill disproves withdrawn, and the collector's wall-clock sweep leaving a truck
alone while its back-fill is still arriving."""

from __future__ import annotations

import datetime as dt

import pytest
from click.testing import CliRunner

from compliance.sweep import sweep_dark
from tests.compliance.city import EMPTY, LOADED, Pipeline, Trace, build_city

pytestmark = pytest.mark.services


@pytest.fixture
def city(db, settings):
    return build_city(db, settings)


def dark(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT t.plate, v.status, v.ended_at IS NOT NULL, v.severity
               FROM violations v JOIN trucks t ON t.id = v.truck_id
               WHERE v.kind = 'going_dark' ORDER BY t.plate, v.started_at"""
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def test_a_past_day_replayed_with_muck_sweep_until(db, settings, city, database_url, monkeypatch):
    day = city.base_ms - 20 * 3600 * 1000  # "yesterday" morning, inside the ingest horizon
    pipeline = Pipeline(settings, db)
    # T1 drives loaded and falls silent on the road for good (its data ends there).
    silent = Trace("T1", day, x=1000).drive(2500, 0, 35, **LOADED)
    # T2 goes into a dead zone; the collector's sweep, hours later on the wall clock, opened a
    # going-dark violation from its last fix before the back-fill arrived ...
    backfilled = Trace("T2", day, x=1000, seed=2).drive(2000, 0, 35, **EMPTY)
    pipeline.feed(silent.messages() + backfilled.messages())
    last_t2 = backfilled.t_ms / 1000 - backfilled.interval_s
    sweep_dark(db, settings, dt.datetime.fromtimestamp(last_t2 + 900, dt.UTC))
    assert dark(db) == [("粤B10001", "new", False, "minor"), ("粤B10002", "new", False, "minor")]
    # ... then the terminal re-uploaded the fixes it had buffered: it was never silent.
    backfilled.fixes.clear()
    backfilled.drive(4000, 0, 35, **EMPTY).dwell(60, **EMPTY, acc=False)
    pipeline.feed(backfilled.messages())
    # Withdrawn by the batch that brought the back-fill: no stale alert stays open.
    assert dark(db) == [
        ("粤B10001", "new", False, "minor"),
        ("粤B10002", "withdrawn", False, "minor"),
    ]

    from muck.cli import _register_subcommands, cli

    _register_subcommands()
    monkeypatch.setenv("MUCK_DATABASE_URL", database_url)
    monkeypatch.delenv("MUCK_CONFIG", raising=False)
    end_of_day = dt.datetime.fromtimestamp(backfilled.t_ms / 1000 + 3 * 3600, dt.UTC)
    result = CliRunner().invoke(cli, ["sweep", "--until", end_of_day.isoformat()])
    assert result.exit_code == 0, result.output
    assert "0 going dark opened, 0 stale withdrawn" in result.output
    # T1 silent at the end of the day: its violation stays open, its minutes on device time
    # (3 hours and more, not the day since); T2 parked with the engine off: nothing.
    with db.cursor() as cur:
        cur.execute(
            "SELECT worst_value, severity FROM violations WHERE truck_id = %s AND status = 'new'",
            (city.trucks["T1"],),
        )
        ((minutes, severity),) = cur.fetchall()
    db.commit()
    assert 180 < float(minutes) < 200 and severity == "serious"
    again = CliRunner().invoke(cli, ["sweep", "--until", end_of_day.isoformat()])
    assert "0 going dark opened, 0 stale withdrawn" in again.output


def test_sweep_until_opens_what_the_wall_clock_never_saw(db, settings, city, database_url):
    from compliance.sweep import sweep_until

    day = city.base_ms - 20 * 3600 * 1000
    trace = Trace("T1", day, x=1000).drive(2500, 0, 35, **LOADED)
    Pipeline(settings, db).feed(trace.messages())
    assert dark(db) == []
    end = dt.datetime.fromtimestamp(trace.t_ms / 1000 + 600, dt.UTC)
    assert sweep_until(db, settings, end)["opened"] == 1
    # A window ending before the truck fell silent judges nothing.
    db.rollback()
    with db.cursor() as cur:
        cur.execute("DELETE FROM violation_events")
        cur.execute("DELETE FROM violations")
    db.commit()
    before = dt.datetime.fromtimestamp(trace.t_ms / 1000 - 60, dt.UTC)
    assert sweep_until(db, settings, before)["opened"] == 0
