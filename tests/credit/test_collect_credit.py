"""Credit's clock jobs run in the product: the real `muck collect`, started as an operator
starts it, proposes listings from decided cases and expires entries whose time is up; seen
only by their effect in the database."""

from __future__ import annotations

import datetime as dt
import time

from credit.lists import evaluate, list_entries, sign_off
from tests.credit.history import case, company, violation
from tests.mqtt_helpers import collector_env, count, wait_until
from tests.services import muck_collect

FAST = """
[credit]
listing_every_s = 1
"""


def test_the_collector_lists_and_expires_on_the_clock(db, settings, broker):
    now = dt.datetime.now(dt.UTC)
    # An entry already in force whose planned removal date has passed.
    old, (old_truck,) = company(db, "旧运输公司", None, plates=("粤B30001",))
    v = violation(db, settings, old_truck, "illegal_dumping", now - dt.timedelta(days=3))
    case(db, old, [v], decided_at=now - dt.timedelta(days=2))
    evaluate(db, settings)
    (entry,) = list_entries(db, subject="company")
    sign_off(db, settings, entry["id"], "credit1")
    with db.cursor() as cur:
        cur.execute(
            "UPDATE credit_list_entries SET planned_removal_on = current_date - 1 WHERE id = %s",
            (entry["id"],),
        )
    db.commit()
    # A company with three decided dumping cases, not yet evaluated.
    cid, (truck,) = company(db)
    for i in range(3):
        dump = violation(db, settings, truck, "illegal_dumping", now - dt.timedelta(days=9 - i))
        case(db, cid, [dump], decided_at=now - dt.timedelta(days=8 - i))

    process = muck_collect("credit-jobs", collector_env(settings, broker.url, FAST))
    try:
        assert wait_until(
            lambda: (
                count(
                    db,
                    """SELECT count(*) FROM credit_list_entries WHERE company_id = %s
                   AND subject_kind = 'company' AND list_type = 'black' AND status = 'pending'""",
                    (cid,),
                )
                == 1
            ),
            timeout=30,
        ), process.output()
        assert wait_until(
            lambda: (
                count(
                    db,
                    """SELECT count(*) FROM credit_list_events WHERE entry_id = %s
                   AND action = 'expired' AND actor = 'system'""",
                    (entry["id"],),
                )
                == 1
            ),
            timeout=30,
        ), process.output()
    finally:
        assert process.stop() == 0, process.output()
    (expired,) = [e for e in list_entries(db) if e["id"] == entry["id"]]
    assert expired["status"] == "removed" and expired["removal_reason"] == "expiry"


def test_the_collector_writes_the_nightly_export(db, settings, broker, tmp_path):
    from zoneinfo import ZoneInfo

    from credit.exports import fetch_export

    local_now = dt.datetime.now(ZoneInfo(settings.city["timezone"]))
    yesterday_noon = (local_now - dt.timedelta(days=1)).replace(hour=12, minute=0)
    cid, (truck,) = company(db)
    v = violation(db, settings, truck, "speeding", yesterday_noon - dt.timedelta(hours=2))
    case(db, cid, [v], decided_at=yesterday_noon)
    folder = tmp_path / "nightly"
    config = f"""
[credit]
listing_every_s = 3600
nightly_export_dir = "{folder}"
nightly_export_hour = 0
nightly_check_s = 1
nightly_export_format = "csv"
"""
    process = muck_collect("credit-nightly", collector_env(settings, broker.url, config))
    try:
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM credit_exports WHERE via = 'nightly'") == 2,
            timeout=30,
        ), process.output()
        day = yesterday_noon.date().isoformat()
        penalties = folder / f"penalties_{day}_{day}.csv"
        assert wait_until(penalties.exists, timeout=5), process.output()
        # Checked again and again while the collector runs: still once a day.
        time.sleep(2.5)
        assert count(db, "SELECT count(*) FROM credit_exports WHERE via = 'nightly'") == 2
    finally:
        assert process.stop() == 0, process.output()
    with db.cursor() as cur:
        cur.execute("SELECT id, row_count FROM credit_exports WHERE kind = 'penalties'")
        export_id, rows = cur.fetchone()
    db.rollback()
    assert rows == 1
    assert fetch_export(db, export_id)[1] == penalties.read_bytes()
    assert "深圳某某运输有限公司" in penalties.read_text(encoding="utf-8-sig")
