"""Going dark judged fairly (docs/compliance.md, "Going dark: the rule table"): every row of
the table both ways, on the next fix (the rule) and on the clock (the sweep), through the
real ingestion path with 10-20 m GPS noise."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest

from compliance.sweep import sweep_dark
from telemetry.contract import Topics
from telemetry.ingest import Incoming
from tests.compliance.city import EMPTY, LOADED, Pipeline, Trace, build_city

pytestmark = pytest.mark.services
TOPICS = Topics("muck/v1")


@pytest.fixture
def city(db, settings):
    return build_city(db, settings)


def dark_rows(db) -> list[tuple]:
    with db.cursor() as cur:
        cur.execute(
            """SELECT severity, ended_at IS NOT NULL, status FROM violations
               WHERE kind = 'going_dark' AND status <> 'withdrawn' ORDER BY id"""
        )
        rows = cur.fetchall()
    db.commit()
    return rows


def status(device: str, body) -> Incoming:
    payload = body.encode() if isinstance(body, str) else msgspec.json.encode(body)
    return Incoming(TOPICS.status(device), payload)


def scenario(db, settings, city, before, *, where=(1000, 0), after=None, status_body=None):
    """A truck ends `before(trace)` at `where`, falls silent (after an optional status
    message), is swept 15 minutes later, then reports again 20 minutes after its last fix
    (`after`, default: standing where it was, as before). Returns (what the sweep left, what
    the return left)."""
    trace = Trace("T1", city.base_ms, x=where[0], y=where[1])
    before(trace)
    pipeline = Pipeline(settings, db)
    messages = trace.messages()
    last_ms = trace.t_ms - int(trace.interval_s * 1000)
    if status_body is not None:
        if isinstance(status_body, dict):
            status_body = {**status_body, "ts": last_ms + 2000}
        messages.append(status("T1", status_body))
    pipeline.feed(messages)
    now = dt.datetime.fromtimestamp(last_ms / 1000 + 900, dt.UTC)
    sweep_dark(db, settings, now)
    swept = dark_rows(db)
    last_state = {k: trace.fixes[-1].get(k) for k in ("load", "lid", "lift", "acc")}
    trace.fixes.clear()
    trace.gap(1200 - trace.interval_s)
    if status_body is not None:
        pipeline.feed([status("T1", "online")])
    (after or (lambda t: t.dwell(60, **last_state)))(trace)
    pipeline.feed(trace.messages())
    return swept, dark_rows(db)


def test_loaded_on_the_road_must_alert(db, settings, city):
    swept, back = scenario(db, settings, city, lambda t: t.drive(1000, 0, 35, **LOADED))
    assert swept == [("minor", False, "new")]
    assert back == [("minor", True, "new")]  # 20 minutes: serious from 30


def test_loaded_on_the_road_alerts_whatever_the_terminal_says(db, settings, city):
    """ACC off, or an orderly shutdown, do not excuse a load outside every site."""
    swept, back = scenario(
        db, settings, city, lambda t: t.drive(1000, 0, 35, **LOADED).dwell(60, acc=False, **LOADED)
    )
    assert swept == [("minor", False, "new")] and back == [("minor", True, "new")]


def test_loaded_on_the_road_orderly_offline_still_alerts(db, settings, city):
    swept, back = scenario(
        db,
        settings,
        city,
        lambda t: t.drive(1000, 0, 35, **LOADED),
        status_body={"status": "offline", "reason": "shutdown"},
    )
    assert swept == [("minor", False, "new")] and back == [("minor", True, "new")]


def test_ignition_off_parked_is_not_going_dark(db, settings, city):
    # Loaded, waiting inside its site with the engine off: the terminal may sleep.
    swept, back = scenario(
        db,
        settings,
        city,
        lambda t: t.dwell(120, **LOADED).dwell(60, acc=False, **LOADED),
        where=(0, 0),
    )
    assert swept == [] and back == []


def test_ignition_on_parked_loaded_in_the_site_is_going_dark(db, settings, city):
    swept, back = scenario(db, settings, city, lambda t: t.dwell(180, **LOADED), where=(0, 0))
    assert swept == [("minor", False, "new")] and back == [("minor", True, "new")]


def test_ignition_off_then_back_empty_is_unloaded_while_dark(db, settings, city):
    swept, back = scenario(
        db,
        settings,
        city,
        lambda t: t.dwell(120, **LOADED).dwell(60, acc=False, **LOADED),
        where=(0, 0),
        after=lambda t: t.dwell(60, **EMPTY),
    )
    assert swept == [] and back == [("serious", True, "new")]  # serious however short
    with db.cursor() as cur:
        cur.execute("SELECT rule_params ->> 'unloaded_while_dark' FROM violations")
        assert cur.fetchone() == ("true",)
    db.rollback()


def test_orderly_offline_is_not_going_dark(db, settings, city):
    swept, back = scenario(
        db,
        settings,
        city,
        lambda t: t.drive(1000, 0, 35, **EMPTY),
        status_body={"status": "offline", "reason": "shutdown"},
    )
    assert swept == [] and back == []


@pytest.mark.parametrize(
    "will", ["offline", {"status": "offline"}], ids=["plain", "timed-without-reason"]
)
def test_a_last_will_offline_is_not_orderly(db, settings, city, will):
    # What the broker publishes for a lost connection (shielding looks the same).
    swept, back = scenario(
        db, settings, city, lambda t: t.drive(1000, 0, 35, **EMPTY), status_body=will
    )
    assert swept == [("minor", False, "new")] and back == [("minor", True, "new")]


def test_empty_parked_in_a_disposal_site_is_a_notice(db, settings, city):
    swept, back = scenario(db, settings, city, lambda t: t.dwell(180, **EMPTY), where=(5000, 0))
    assert swept == [("notice", False, "new")]
    assert back == [("notice", True, "new")]


def test_empty_parked_on_the_road_is_going_dark(db, settings, city):
    swept, back = scenario(db, settings, city, lambda t: t.dwell(180, **EMPTY), where=(2500, 0))
    assert swept == [("minor", False, "new")] and back == [("minor", True, "new")]


def test_the_wall_clock_sweep_skips_a_truck_still_back_filling(db, settings, city):
    trace = Trace("T1", city.base_ms, x=1000).drive(1000, 0, 35, **LOADED)
    Pipeline(settings, db).feed(trace.messages())  # received now, fixes 4 hours old
    device_now = dt.datetime.fromtimestamp(trace.t_ms / 1000 + 900, dt.UTC)
    wall = dt.datetime.now(dt.UTC)
    heard = wall - dt.timedelta(seconds=float(settings.thresholds["dark_after_s"]))
    assert sweep_dark(db, settings, device_now, heard_before=heard) == []
    assert len(sweep_dark(db, settings, device_now)) == 1  # on device time alone: dark


def test_a_notice_reaches_only_those_who_ask_for_notices():
    from alerts.subscriptions import Subscription

    notice = {"kind": "going_dark", "severity": "notice"}
    everyone = Subscription(1, "user", "duty", "webhook")
    assert not everyone.matches("detected", notice)
    assert everyone.matches("detected", {**notice, "severity": "minor"})
    assert Subscription(2, "user", "duty", "webhook", severities=["notice"]).matches(
        "detected", notice
    )
