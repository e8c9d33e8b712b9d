"""Fan-out: violation events × subscriptions → outbox rows, matched by kind, severity,
district and company, once per event however often it runs."""

from __future__ import annotations

import time

import pytest

from alerts.fanout import FanOut
from alerts.subscriptions import SubscriptionError, create_subscription, remove_subscription
from compliance.violations import change_status
from tests.alerts.conftest import violate


def fan_out(settings, db) -> FanOut:
    """A pass after the cursor row exists (the tests truncate every table)."""
    fan = FanOut(settings)
    fan.run(db)
    fan.run(db)
    return fan


def subscribe(db, owner="sup1", **filters):
    with db.cursor() as cur:
        sub = create_subscription(cur, owner_kind="user", owner=owner, channel="feed", **filters)
    db.commit()
    return sub.id


def outbox(db) -> set[tuple[int, int, str]]:
    with db.cursor() as cur:
        cur.execute("SELECT subscription_id, violation_id, event FROM alert_outbox")
        rows = set(cur.fetchall())
    db.commit()
    return rows


def test_fan_out_matches_kind_severity_district_and_company(db, settings, fleet):
    (company_a, truck_a), (company_b, truck_b) = fleet["A"], fleet["B"]
    everything = subscribe(db, "all")
    speeding = subscribe(db, "speed", kinds=["speeding"])
    serious = subscribe(db, "serious", severities=["serious"])
    futian = subscribe(db, "futian", districts=["440304"])
    company = subscribe(db, "company", company_ids=[company_b])
    both = subscribe(db, "both", kinds=["unsealed_transport"], company_ids=[company_a])

    v1 = violate(db, settings, truck_a, kind="speeding", district="440304")
    v2 = violate(db, settings, truck_b, kind="unsealed_transport", severity="serious")
    v3 = violate(db, settings, truck_a, kind="unsealed_transport", district="440305")

    fan_out(settings, db)
    assert outbox(db) == {
        (everything, v1, "detected"),
        (everything, v2, "detected"),
        (everything, v3, "detected"),
        (speeding, v1, "detected"),
        (serious, v2, "detected"),
        (futian, v1, "detected"),
        (company, v2, "detected"),
        (both, v3, "detected"),
    }


def test_fan_out_is_idempotent_and_only_wanted_events_go_out(db, settings, fleet):
    _, truck = fleet["A"]
    detected = subscribe(db, "new")
    decisions = subscribe(db, "decisions", events=["confirm", "dismiss"])
    vid = violate(db, settings, truck)
    fan_out(settings, db)
    change_status(db, vid, "confirm", "officer1")
    # Run again from the start of the events, as a second dispatcher that lost its cursor
    # would: no second row for what is already in the outbox.
    with db.cursor() as cur:
        cur.execute("UPDATE alert_cursors SET last_id = 0")
    db.commit()
    fan_out(settings, db)
    fan_out(settings, db)
    assert outbox(db) == {(detected, vid, "detected"), (decisions, vid, "confirm")}
    with db.cursor() as cur:
        cur.execute("SELECT count(*), count(DISTINCT idempotency_key) FROM alert_outbox")
        assert cur.fetchone() == (2, 2)
    db.commit()


def test_removed_subscription_gets_nothing_and_nothing_from_before_it(db, settings, fleet):
    _, truck = fleet["A"]
    before = violate(db, settings, truck)
    sub = subscribe(db)
    after = violate(db, settings, truck)
    fan_out(settings, db)
    assert outbox(db) == {(sub, after, "detected")}
    with db.cursor() as cur:
        assert remove_subscription(cur, sub)
    db.commit()
    violate(db, settings, truck)
    fan_out(settings, db)
    assert outbox(db) == {(sub, after, "detected")}
    assert before


def test_a_hole_in_the_event_ids_holds_the_cursor_until_its_transaction_ends(
    db, settings, fleet, database_url
):
    from core.db import connect

    _, truck = fleet["A"]
    sub = subscribe(db)
    slow = connect(database_url)
    try:
        hold_a_hole(db, settings, truck, sub, slow)
    finally:
        slow.close()  # its sequence lock would block the next test's TRUNCATE


def hold_a_hole(db, settings, truck, sub, slow) -> None:
    # A transaction takes an event id and does not commit yet ...
    with slow.cursor() as cur:
        cur.execute("SELECT nextval('violation_events_id_seq')")
        held = cur.fetchone()[0]
        cur.execute("SELECT pg_current_xact_id()")
    later = violate(db, settings, truck)
    fan = fan_out(settings.with_overrides(alerts={"gap_wait_s": 0.0}), db)
    # ... the later event is fanned out at once, but the cursor stays below the hole.
    assert outbox(db) == {(sub, later, "detected")}

    def cursor():
        with db.cursor() as cur:
            cur.execute("SELECT last_id FROM alert_cursors")
            value = cur.fetchone()[0]
        db.commit()
        return value

    fan.run(db)
    assert cursor() == held - 1, "stepped over a hole whose transaction is still running"
    # Events after the hole keep going out while it holds the cursor.
    another = violate(db, settings, truck)
    fan.run(db)
    assert outbox(db) == {(sub, later, "detected"), (sub, another, "detected")}
    assert cursor() == held - 1
    slow.rollback()  # it never commits: the hole is stepped over
    fan.run(db)
    assert cursor() > held


def test_a_hole_is_stepped_over_after_the_longest_wait_whatever_runs(
    db, settings, fleet, database_url
):
    from core.db import connect

    _, truck = fleet["A"]
    subscribe(db)
    idle = connect(database_url)
    try:
        with idle.cursor() as cur:
            cur.execute("SELECT nextval('violation_events_id_seq')")
            held = cur.fetchone()[0]
            cur.execute("SELECT pg_current_xact_id()")
        violate(db, settings, truck)
        limits = {"gap_wait_s": 0.0, "gap_max_wait_s": 0.3}
        fan = fan_out(settings.with_overrides(alerts=limits), db)
        time.sleep(0.4)
        fan.run(db)
        with db.cursor() as cur:
            cur.execute("SELECT last_id FROM alert_cursors")
            assert cur.fetchone()[0] > held
        db.commit()
    finally:
        idle.close()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"channel": "feed", "kinds": ["flying"]}, "kinds: unknown flying"),
        ({"channel": "feed", "districts": ["4403"]}, "6-digit"),
        ({"channel": "feed", "company_ids": [987654]}, "no company 987654"),
        ({"channel": "webhook", "target": "ftp://x"}, "http://"),
        ({"channel": "wecom", "target": "nonsense"}, "apprise URL"),
        ({"channel": "feed", "owner_kind": "team"}, "a team has no feed"),
    ],
)
def test_bad_subscriptions_are_refused_with_the_field(db, fields, message):
    args = {"owner_kind": "user", "owner": "sup1", **fields}
    with db.cursor() as cur, pytest.raises(SubscriptionError, match=message):
        create_subscription(cur, **args)
    db.rollback()
