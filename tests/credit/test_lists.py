"""Lists: automatic proposals from the rules, the credit officer's sign-off, removals and
expiry, each audited; the flags the map and truck pages show; the permit-import warning."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from credit.lists import (
    ListError,
    entry_events,
    evaluate,
    flagged,
    list_entries,
    reject,
    remove,
    sign_off,
    truck_flag,
)
from geofence.model import Zone
from geofence.store import upsert_zones
from tests.credit.history import case, company, violation

MUCK = str(Path(sys.executable).with_name("muck"))
NOW = dt.datetime.now(dt.UTC)


def days_ago(n: float) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def dumping_cases(db, settings, cid, truck, n, first_day_ago=10):
    ids = []
    for i in range(n):
        v = violation(db, settings, truck, "illegal_dumping", days_ago(first_day_ago - i))
        ids.append(case(db, cid, [v], decided_at=days_ago(first_day_ago - 1 - i)))
    return ids


def companies(db, **filters):
    return list_entries(db, subject="company", **filters)


def test_three_dumping_cases_propose_the_blacklist_and_wait_for_sign_off(db, settings):
    cid, (truck,) = company(db)
    cases = dumping_cases(db, settings, cid, truck, 3)
    result = evaluate(db, settings)
    (entry,) = companies(db)
    # (The truck lost its 30 points too: a truck entry of its own, tested below.)
    assert len(result.proposed) == 2 and entry["id"] in result.proposed
    # 3 x 10 points: score 70 → black by threshold, and the dumping rule: one entry, two reasons.
    assert entry["status"] == "pending" and entry["list_type"] == "black"
    assert set(entry["rules"]) == {"score_black", "illegal_dumping_cases"}
    assert entry["case_ids"] == cases and entry["listed_on"] is None
    assert entry["legal_basis"] and entry["authority_name"] == settings["cases"]["authority_name"]
    # Nothing is flagged before the sign-off.
    with db.cursor() as cur:
        assert truck_flag(cur, truck) is None
    db.rollback()
    # The job runs again: no second proposal for the same cases.
    assert evaluate(db, settings).proposed == []

    done = sign_off(db, settings, entry["id"], "credit1", "reviewed")
    (entry,) = companies(db)
    assert entry["status"] == "active" and entry["signed_off_by"] == "credit1"
    assert entry["planned_removal_on"] - entry["listed_on"] == dt.timedelta(days=365)
    assert done["listed_on"] == entry["listed_on"]
    with db.cursor() as cur:
        assert truck_flag(cur, truck) == "black"
        assert flagged(cur)["companies"] == {cid: "black"}
    db.rollback()
    with pytest.raises(ListError, match="is active, not waiting for sign-off"):
        sign_off(db, settings, entry["id"], "credit1")
    assert [e["action"] for e in entry_events(db, entry["id"])] == ["proposed", "signed_off"]


def test_without_sign_off_an_entry_takes_effect_at_once(db, settings):
    cid, (truck,) = company(db)
    v = violation(db, settings, truck, "no_valid_permit", days_ago(3))
    case(db, cid, [v], decided_at=days_ago(2))
    immediate = settings.with_overrides(credit={"signoff_required": False})
    evaluate(db, immediate)
    # One black-truck operation: the company is blacklisted; its score (90) is on the watch
    # line too, a separate entry.
    entries = {e["list_type"]: e for e in companies(db)}
    assert set(entries) == {"black", "watch"}
    black = entries["black"]
    assert black["status"] == "active" and black["signed_off_by"] == "system"
    assert black["rules"] == ["black_truck_operation"]


def test_withdrawn_case_drops_a_pending_proposal(db, settings):
    cid, (truck,) = company(db)
    d1 = violation(db, settings, truck, "going_dark", days_ago(5), unloaded_while_dark=True)
    d2 = violation(db, settings, truck, "going_dark", days_ago(4), unloaded_while_dark=True)
    plain = violation(db, settings, truck, "going_dark", days_ago(4.5))
    case(db, cid, [d1, plain], decided_at=days_ago(3))
    second = case(db, cid, [d2], decided_at=days_ago(2))
    evaluate(db, settings)
    (red,) = list_entries(db, list_type="red")
    assert red["rules"] == ["dark_while_loaded"] and red["status"] == "pending"
    with db.cursor() as cur:
        cur.execute(
            """UPDATE credit_cases SET status = 'withdrawn', withdrawn_at = now(),
                   withdrawn_reason = '复议撤销' WHERE id = %s""",
            (second,),
        )
        cur.execute(
            "UPDATE credit_case_violations SET active = false WHERE case_id = %s", (second,)
        )
    db.commit()
    assert evaluate(db, settings).dropped == [red["id"]]
    (red,) = list_entries(db, list_type="red")
    assert red["status"] == "rejected" and red["removal_reason"] == "no_longer_holds"


def test_removal_needs_a_reason_and_expiry_is_the_jobs(db, settings):
    cid, (truck,) = company(db)
    dumping_cases(db, settings, cid, truck, 1)
    evaluate(db, settings)
    (watch,) = list_entries(db)
    assert watch["list_type"] == "watch"
    with pytest.raises(ListError, match="needs a reason"):
        reject(db, watch["id"], "credit1", " ")
    with pytest.raises(ListError, match="not in force"):
        remove(db, settings, watch["id"], "credit1", "credit_repair", "repaired")
    sign_off(db, settings, watch["id"], "credit1")
    with pytest.raises(ListError, match="expiry is automatic"):
        remove(db, settings, watch["id"], "credit1", "expiry", "x")
    # The job on the day of the planned removal (180 days on) takes it off.
    later = NOW + dt.timedelta(days=181)
    result = evaluate(db, settings, now=later)
    assert watch["id"] in result.expired
    (entry,) = [e for e in list_entries(db) if e["id"] == watch["id"]]
    assert entry["status"] == "removed" and entry["removal_reason"] == "expiry"
    assert entry["removed_on"] == entry["planned_removal_on"]
    assert [e["action"] for e in entry_events(db, watch["id"])] == [
        "proposed",
        "signed_off",
        "expired",
    ]


def test_credit_repair_removes_and_the_same_cases_do_not_list_again(db, settings):
    cid, (truck,) = company(db)
    dumping_cases(db, settings, cid, truck, 1)
    evaluate(db, settings)
    (watch,) = list_entries(db)
    sign_off(db, settings, watch["id"], "credit1")
    remove(db, settings, watch["id"], "credit1", "credit_repair", "信用修复申请已通过")
    assert evaluate(db, settings).proposed == []
    (entry,) = list_entries(db)
    assert entry["status"] == "removed" and entry["removal_reason"] == "credit_repair"
    # A new case is new ground for a listing.
    dumping_cases(db, settings, cid, truck, 1, first_day_ago=5)
    assert len(evaluate(db, settings).proposed) == 1


def test_truck_losing_30_points_is_stopped_for_a_month(db, settings):
    cid, (t1, t2) = company(db, plates=("粤B10001", "粤B10002"))
    ids = [violation(db, settings, t1, "illegal_dumping", days_ago(8 - i)) for i in range(3)]
    other = violation(db, settings, t2, "speeding", days_ago(5))
    case(db, cid, [*ids, other], decided_at=days_ago(1), penalty_category="警告")
    evaluate(db, settings.with_overrides(credit={"signoff_required": False}))
    trucks = [e for e in list_entries(db) if e["subject_kind"] == "truck"]
    assert [(e["truck_id"], e["list_type"]) for e in trucks] == [(t1, "black")]
    assert trucks[0]["planned_removal_on"] - trucks[0]["listed_on"] == dt.timedelta(days=30)
    assert trucks[0]["subject_name"] == "粤B10001"


PERMITS_CSV = (
    "核准编号,运输企业,统一社会信用代码,车牌号,出土工地,消纳场,核准路线,作业时段,"
    "有效期起,有效期止,核发机关,备注\n"
    "深建渣准〔2026〕0900号,深圳某某运输有限公司,91110000600037341L,粤B10001,SITE-A,"
    "DISP-1,,21:00-04:00,2026-01-01,2026-12-31,深圳市住房和建设局,\n"
)


def test_permit_import_warns_about_a_blacklisted_company_and_stores_the_permit(
    db, settings, tmp_path
):
    ring = [[114.0, 22.5], [114.01, 22.5], [114.01, 22.51], [114.0, 22.51], [114.0, 22.5]]
    upsert_zones(
        db,
        [
            Zone("SITE-A", "site", "工地A", {"type": "Polygon", "coordinates": [ring]}),
            Zone("DISP-1", "disposal", "消纳场1", {"type": "Polygon", "coordinates": [ring]}),
        ],
    )
    cid, (truck,) = company(db)
    dumping_cases(db, settings, cid, truck, 3)
    evaluate(db, settings)
    (entry,) = companies(db)
    path = tmp_path / "permits.csv"
    path.write_text(PERMITS_CSV, encoding="utf-8")
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": settings.database_url}
    pending = subprocess.run(
        [MUCK, "permits", "import", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    # Pending is not in force: no warning yet.
    assert pending.returncode == 0 and "blacklist" not in pending.stderr, pending.stderr
    sign_off(db, settings, entry["id"], "credit1")
    listed = subprocess.run(
        [MUCK, "permits", "import", str(path)], capture_output=True, text=True, env=env, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "1 updated" in listed.stdout
    assert "深建渣准〔2026〕0900号" in listed.stderr and "blacklist" in listed.stderr
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM permits WHERE number = '深建渣准〔2026〕0900号'")
        assert cur.fetchone()[0] == 1
        cur.execute("SELECT permit_no, company_id, entry_id FROM credit_permit_warnings")
        assert cur.fetchall() == [("深建渣准〔2026〕0900号", cid, entry["id"])]
    db.rollback()


def test_cli_scores_lists_and_signs_off(db, settings):
    cid, (truck,) = company(db)
    dumping_cases(db, settings, cid, truck, 1)
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": settings.database_url}

    def muck(*args):
        return subprocess.run([MUCK, *args], capture_output=True, text=True, env=env, timeout=60)

    scored = muck("credit", "score", "--company", str(cid))
    assert scored.returncode == 0 and "90 points" in scored.stdout
    assert "illegal_dumping" in scored.stdout
    past = muck("credit", "score", "--company", str(cid), "--at", days_ago(30).date().isoformat())
    assert "100 points" in past.stdout
    bad = muck("credit", "score", "--company", str(cid), "--at", "3 May")
    assert bad.returncode != 0 and "is not a date" in bad.stderr and "Traceback" not in bad.stderr
    missing = muck("credit", "score", "--company", "999999")
    assert missing.returncode != 0 and "no company 999999" in missing.stderr
    assert "proposed 1" in muck("credit", "evaluate").stdout
    (entry,) = list_entries(db)
    assert "pending" in muck("credit", "lists").stdout
    refused = muck("credit", "reject", str(entry["id"]), "--by", "credit1")
    assert refused.returncode == 1 and "needs a reason" in refused.stderr
    assert muck("credit", "sign-off", str(entry["id"]), "--by", "credit1").returncode == 0
    assert list_entries(db)[0]["status"] == "active"
