"""Cases over confirmed violations: opening, deciding, publishing, closing, withdrawing, with
the violations moving along and every change in the case's events (real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import decimal
import importlib.util
from pathlib import Path

import pytest

from compliance.pipeline import PIPELINE
from compliance.violations import ViolationError, change_status
from core.config import ConfigError, load_settings
from core.db import transaction
from credit import cases as K
from credit.numbering import check_pattern
from evidence.capture import CaptureJob
from registry.service import upsert_company, upsert_truck
from tests.web.test_violations import T0, insert_violation

ROOT = Path(__file__).resolve().parents[2]
VALID_CODE = "91110000600037341L"
BAD_CODE = "91110000600037341K"  # one check character off


@pytest.fixture
def fleet(db, settings):
    """Two companies (one with a bad credit code), a truck without a company, confirmed
    violations with their evidence captured (final: the episodes ended long ago)."""
    with db.cursor() as cur:
        a = upsert_company(cur, "深圳市甲运输有限公司", VALID_CODE)
        cur.execute("UPDATE companies SET legal_representative = '张三' WHERE id = %s", (a,))
        b = upsert_company(cur, "深圳市乙运输有限公司", BAD_CODE)
        t1 = upsert_truck(cur, "粤B10001", a)
        t2 = upsert_truck(cur, "粤B10002", a)
        t3 = upsert_truck(cur, "粤B20001", b)
        t4 = upsert_truck(cur, "粤B30001", None)
    db.commit()
    v = {
        "speed": insert_violation(db, t1, a, "speeding", status="confirmed"),
        "unsealed": insert_violation(
            db,
            t2,
            a,
            "unsealed_transport",
            start=T0 + dt.timedelta(hours=2),
            status="confirmed",
            worst_value=None,
            worst_unit="",
        ),
        "new": insert_violation(db, t1, a, "speeding", start=T0 + dt.timedelta(hours=5)),
        "other": insert_violation(db, t3, b, "illegal_dumping", status="confirmed"),
        "loose": insert_violation(db, t4, None, "speeding", status="confirmed"),
    }
    CaptureJob(settings)(db)
    return {"companies": (a, b), "trucks": (t1, t2, t3, t4), "v": v}


def statuses(db, ids) -> dict[int, tuple]:
    with db.cursor() as cur:
        cur.execute(
            "SELECT id, status, decision_no FROM violations WHERE id = ANY(%s)", (list(ids),)
        )
        out = {vid: (status, number) for vid, status, number in cur.fetchall()}
    db.rollback()
    return out


def read(db, fn, *args, **kw):
    with db.cursor() as cur:
        out = fn(cur, *args, **kw)
    db.rollback()
    return out


def open_(db, settings, ids, actor="officer1", **kw) -> int:
    with transaction(db) as cur:
        return K.open_case(cur, settings, ids, actor, **kw)


def test_open_a_case_from_two_violations_of_one_company(db, settings, fleet):
    v = fleet["v"]
    case_id = open_(db, settings, [v["unsealed"], v["speed"]], note="两起同一企业")
    case = read(db, K.get_case, case_id)
    year = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).year
    assert case["case_no"] == f"示城管立〔{year}〕0001号" and case["case_year"] == year
    assert case["status"] == "open" and case["created_by"] == "officer1"
    assert case["party_kind"] == "company" and case["company_id"] == fleet["companies"][0]
    assert case["party_name"] == "深圳市甲运输有限公司"
    assert case["party_credit_code"] == VALID_CODE and case["party_credit_code_valid"] is True
    assert case["legal_representative"] == "张三"
    assert case["truck_id"] is None  # two trucks of the company
    # legal basis: the city's table by each kind's key, one line per provision
    table = settings["cases"]["legal_basis"]
    assert case["legal_basis"].split("\n") == [
        table["road_traffic_safety_law.art_42"],
        table["construction_waste_rules.art_14.no_spilling"],
    ]
    # facts from the evidence: both plates, local times, the checksum's start, sensor states
    facts = case["facts"]
    assert "1. 2026-11-23 08:30:00至2026-11-23 08:31:00" in facts
    assert "粤B10001" in facts and "粤B10002" in facts and "超速" in facts
    assert "未密闭运输" in facts and "车厢盖 打开" in facts and "载重 满载" in facts
    sha = read(db, lambda cur: (cur.execute(
        "SELECT sha256 FROM evidence_records WHERE violation_id = %s", (v["speed"],)
    ), cur.fetchone()[0])[1])  # fmt: skip
    assert sha[:16] in facts and "已固化" in facts
    assert statuses(db, [v["speed"], v["unsealed"]]) == {
        v["speed"]: ("case_opened", None),
        v["unsealed"]: ("case_opened", None),
    }
    assert read(db, K.case_of_violation, v["speed"]) == K.CaseRef(case_id, case["case_no"], "open")
    (event,) = read(db, K.case_events, case_id)
    assert event["action"] == "opened" and event["actor"] == "officer1"
    assert event["before"] is None and event["after"]["violations"] == sorted(
        [v["speed"], v["unsealed"]]
    )
    assert event["note"] == "两起同一企业"
    # the violations' own history says which case
    with db.cursor() as cur:
        cur.execute(
            "SELECT action, after->>'case_no' FROM violation_events WHERE violation_id = %s "
            "ORDER BY id DESC LIMIT 1",
            (v["speed"],),
        )
        assert cur.fetchone() == ("open_case", case["case_no"])
    db.rollback()


@pytest.mark.parametrize(
    ("which", "message", "field"),
    [
        ((), "at least one confirmed violation", "violations"),
        (("speed", "new"), r"only confirmed violations go into a case: \d+ \(new\)", "violations"),
        (("speed", "other"), "belong to different companies", "violations"),
        (("speed", 999_999), "violation 999999 does not exist", "violations"),
        (("loose",), "has no company: name the party", "party_name"),
    ],
)
def test_opening_is_refused_with_the_reason_and_nothing_stored(
    db, settings, fleet, which, message, field
):
    ids = [fleet["v"].get(w, w) for w in which]
    with pytest.raises(K.CaseError, match=message) as refused:
        open_(db, settings, ids)
    assert refused.value.field == field
    assert read(db, K.list_cases)[1] == 0
    assert {s for s, _ in statuses(db, fleet["v"].values()).values()} == {"confirmed", "new"}


def test_a_violation_is_in_one_case_at_a_time(db, settings, fleet):
    v = fleet["v"]
    open_(db, settings, [v["speed"]])
    with pytest.raises(K.CaseError, match=r"violation \d+ \(case_opened\) is not confirmed|only"):
        open_(db, settings, [v["speed"], v["unsealed"]])
    assert statuses(db, [v["unsealed"]])[v["unsealed"]][0] == "confirmed"


def test_a_truck_without_company_makes_an_individual_case(db, settings, fleet):
    case_id = open_(
        db, settings, [fleet["v"]["loose"]], fields={"party_name": "李四", "party_id_no": "X1"}
    )
    case = read(db, K.get_case, case_id)
    assert case["party_kind"] == "individual" and case["party_name"] == "李四"
    assert case["truck_id"] == fleet["trucks"][3] and case["company_id"] is None
    assert case["party_credit_code"] is None and case["party_credit_code_valid"] is None


def test_an_invalid_credit_code_is_kept_and_flagged(db, settings, fleet):
    case_id = open_(db, settings, [fleet["v"]["other"]])
    case = read(db, K.get_case, case_id)
    assert case["party_credit_code"] == BAD_CODE and case["party_credit_code_valid"] is False
    with transaction(db) as cur:
        K.edit_case(cur, settings, case_id, "officer1", {"party_credit_code": VALID_CODE.lower()})
    case = read(db, K.get_case, case_id)
    assert case["party_credit_code"] == VALID_CODE and case["party_credit_code_valid"] is True
    event = read(db, K.case_events, case_id)[-1]
    assert event["action"] == "edited"
    assert event["before"] == {"party_credit_code": BAD_CODE, "party_credit_code_valid": False}
    assert event["after"] == {"party_credit_code": VALID_CODE, "party_credit_code_valid": True}


def test_decide_publish_close_with_the_violations(db, settings, fleet):
    v = fleet["v"]
    ids = [v["speed"], v["unsealed"]]
    case_id = open_(db, settings, ids)
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    refusals = [
        ({}, "choose the penalty category", "penalty_category"),
        ({"fields": {"penalty_category": "罚款"}}, "needs its amount", "fine_yuan"),
        ({"fields": {"penalty_category": "杖责"}}, "is not one of", "penalty_category"),
        ({"fields": {"penalty_category": "罚款", "fine_yuan": "-5"}}, "between 0", "fine_yuan"),
        (
            {"fields": {"penalty_category": "罚款", "fine_yuan": "五千"}},
            "not an amount",
            "fine_yuan",
        ),
        (
            {"fields": {"penalty_category": "警告"}, "decision_date": today + dt.timedelta(days=1)},
            "is in the future",
            "decision_date",
        ),
    ]
    for kwargs, message, field in refusals:
        with pytest.raises(K.CaseError, match=message) as refused, transaction(db) as cur:
            K.decide(cur, settings, case_id, "officer2", **kwargs)
        assert refused.value.field == field
    assert read(db, K.get_case, case_id)["status"] == "open"
    with transaction(db) as cur:
        number = K.decide(
            cur,
            settings,
            case_id,
            "officer2",
            fields={"penalty_category": "罚款", "fine_yuan": "20,000"},
        )
    assert number == f"示城管罚决〔{today.year}〕0001号"
    case = read(db, K.get_case, case_id)
    assert case["status"] == "decided" and case["decision_no"] == number
    assert case["decision_date"] == today and case["decided_at"] is not None
    assert case["fine_yuan"] == decimal.Decimal("20000.00")
    assert case["penalty_content"] == "罚款：罚款人民币20,000.00元"
    assert case["authority_name"] == settings["cases"]["authority_name"]
    assert statuses(db, ids) == {vid: ("case_opened", number) for vid in ids}
    decided = read(db, K.case_events, case_id)[-1]
    assert decided["action"] == "decided" and decided["actor"] == "officer2"
    assert decided["before"]["status"] == "open" and decided["before"]["fine_yuan"] is None
    assert decided["after"]["status"] == "decided" and decided["after"]["fine_yuan"] == "20000.00"
    # after the decision only a withdrawal corrects it
    with pytest.raises(K.CaseError, match="only an open case is edited"), transaction(db) as cur:
        K.edit_case(cur, settings, case_id, "officer2", {"facts": "改"})
    with pytest.raises(K.CaseError, match="cannot close case .* it is open|expected"):
        with transaction(db) as cur:
            K.publish(cur, case_id, "officer2")
            K.publish(cur, case_id, "officer2")
    assert read(db, K.get_case, case_id)["status"] == "decided"  # rolled back together
    with transaction(db) as cur:
        K.publish(cur, case_id, "officer2")
        K.close(cur, case_id, "officer2", note="罚款已缴纳")
    case = read(db, K.get_case, case_id)
    assert case["status"] == "closed" and case["published_at"] and case["closed_at"]
    assert {s for s, _ in statuses(db, ids).values()} == {"closed"}
    actions = [e["action"] for e in read(db, K.case_events, case_id)]
    assert actions == ["opened", "decided", "published", "closed"]


def test_a_decision_number_is_used_once(db, settings, fleet):
    v = fleet["v"]
    first = open_(db, settings, [v["speed"]])
    second = open_(db, settings, [v["other"]])
    with transaction(db) as cur:
        K.decide(cur, settings, first, "o", decision_no="深城管罚〔2026〕7号",
                 fields={"penalty_category": "警告"})  # fmt: skip
    with pytest.raises(K.CaseError, match="already used by case") as refused:
        with transaction(db) as cur:
            K.decide(cur, settings, second, "o", decision_no="深城管罚〔2026〕7号",
                     fields={"penalty_category": "警告"})  # fmt: skip
    assert refused.value.field == "decision_no"
    # the proposal skips a number typed by hand that matches the pattern
    year = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).year
    third = open_(db, settings, [v["unsealed"]])
    with transaction(db) as cur:
        K.decide(cur, settings, second, "o", decision_no=f"示城管罚决〔{year}〕0001号",
                 fields={"penalty_category": "警告"})  # fmt: skip
        number = K.decide(cur, settings, third, "o", fields={"penalty_category": "警告"})
    assert number == f"示城管罚决〔{year}〕0002号"


def test_withdraw_restores_and_releases_the_violations(db, settings, fleet):
    v = fleet["v"]
    ids = [v["speed"], v["unsealed"]]
    case_id = open_(db, settings, ids)
    # a violation in a case cannot be dismissed: the message says to withdraw the case
    with pytest.raises(ViolationError, match="it is in a case .*withdraw the case first"):
        change_status(db, v["speed"], "dismiss", "officer1", note="误报")
    with transaction(db) as cur:
        K.decide(cur, settings, case_id, "o", fields={"penalty_category": "警告"})
        K.close(cur, case_id, "o")
    with pytest.raises(K.CaseError, match="needs a reason") as refused, transaction(db) as cur:
        K.withdraw(cur, case_id, "o", "  ")
    assert refused.value.field == "reason"
    with transaction(db) as cur:
        K.withdraw(cur, case_id, "chief", "复议撤销原处罚决定")
    case = read(db, K.get_case, case_id)
    assert case["status"] == "withdrawn" and case["withdrawn_reason"] == "复议撤销原处罚决定"
    assert case["withdrawn_at"] is not None and case["decided_at"] is not None  # history kept
    assert statuses(db, ids) == {vid: ("confirmed", None) for vid in ids}
    assert read(db, K.case_of_violation, v["speed"]) is None
    assert read(db, K.case_violation_ids, case_id) == sorted(ids)
    assert read(db, K.case_violation_ids, case_id, active_only=True) == []
    event = read(db, K.case_events, case_id)[-1]
    assert event["action"] == "withdrawn" and event["before"]["status"] == "closed"
    with pytest.raises(K.CaseError, match="already withdrawn"), transaction(db) as cur:
        K.withdraw(cur, case_id, "chief", "again")
    # released: they go into a new case, or are dismissed
    again = open_(db, settings, [v["unsealed"]])
    assert read(db, K.get_case, again)["case_no"].endswith("0002号")
    assert change_status(db, v["speed"], "dismiss", "officer1", note="误报") == "dismissed"


def test_case_actions_on_a_violation_go_through_a_case(db, settings, fleet):
    with pytest.raises(ViolationError, match="is done through a case"):
        change_status(db, fleet["v"]["speed"], "open_case", "officer1")
    with transaction(db) as cur:
        case_id = K.open_case_for_violation(cur, settings, fleet["v"]["speed"], "o", "X罚〔1〕号")
    case = read(db, K.get_case, case_id)
    assert case["status"] == "decided" and case["decision_no"] == "X罚〔1〕号"
    assert case["penalty_category"] is None
    with transaction(db) as cur:
        assert K.close_case_of_violation(cur, fleet["v"]["speed"], "o") == case_id
    assert statuses(db, [fleet["v"]["speed"]])[fleet["v"]["speed"]][0] == "closed"
    with pytest.raises(K.CaseError, match="cannot close a violation that is confirmed"):
        with transaction(db) as cur:
            K.close_case_of_violation(cur, fleet["v"]["other"], "o")


def test_number_patterns_are_checked(settings):
    check_pattern("{authority_short}立〔{year}〕{seq:04d}号", "case_number_pattern")
    for bad, message in (
        ("{authority_short}〔{seq}〕号", "must hold {year} and {seq}"),
        ("{city}{year}{seq}", "unknown field {city}"),
        ("{year}{seq", "case_number_pattern"),
    ):
        with pytest.raises(ConfigError, match=message):
            check_pattern(bad, "case_number_pattern")


def test_every_rule_has_a_legal_text_for_cases():
    table = load_settings()["cases"]["legal_basis"]
    keys = {rule.legal_basis_key for rule in PIPELINE}
    assert keys == set(table), "one [cases.legal_basis] entry per Rule.legal_basis_key"
    assert all("《" in table[k] or "本市" in table[k] for k in keys)


def _migration():
    path = ROOT / "credit/sql/0003_cases_from_violations.py"
    spec = importlib.util.spec_from_file_location("m0003", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_migration_makes_cases_of_old_case_opened_violations(db, settings, fleet):
    v = fleet["v"]
    with db.cursor() as cur:
        # as the old open_case left them: two violations under one decision number, one
        # closed, each with its open_case event
        for vid, status in ((v["speed"], "case_opened"), (v["unsealed"], "closed")):
            cur.execute(
                "UPDATE violations SET status = %s, decision_no = '深罚〔2025〕9号' WHERE id = %s",
                (status, vid),
            )
        cur.execute(
            "UPDATE violations SET status = 'closed', decision_no = '深罚〔2025〕3号' WHERE id = %s",
            (v["other"],),
        )
        for vid in (v["speed"], v["unsealed"], v["other"]):
            cur.execute(
                """INSERT INTO violation_events (violation_id, at, actor, action)
                   VALUES (%s, '2025-12-31 17:00+00', 'wang', 'open_case')""",
                (vid,),
            )
        cur.execute(
            """INSERT INTO violation_events (violation_id, at, actor, action)
               VALUES (%s, '2026-01-05 02:00+00', 'wang', 'close')""",
            (v["other"],),
        )
    db.commit()
    before = statuses(db, v.values())
    with transaction(db) as cur:
        _migration().apply(cur, settings)
    with transaction(db) as cur:
        _migration().apply(cur, settings)  # idempotent
    rows, total = read(db, K.list_cases)
    assert total == 2
    by_no = {r["decision_no"]: r for r in rows}
    shared = read(db, K.get_case, by_no["深罚〔2025〕9号"]["id"])
    # 2025-12-31 17:00 UTC is 2026-01-01 in the city: the local year and day count
    assert shared["status"] == "decided" and shared["decision_date"] == dt.date(2026, 1, 1)
    assert shared["created_by"] == "wang"
    assert read(db, K.case_violation_ids, shared["id"]) == sorted([v["speed"], v["unsealed"]])
    closed = read(db, K.get_case, by_no["深罚〔2025〕3号"]["id"])
    assert closed["status"] == "closed" and closed["party_credit_code_valid"] is False
    assert closed["closed_at"] == dt.datetime(2026, 1, 5, 2, tzinfo=dt.UTC)
    assert read(db, K.case_events, closed["id"])[0]["action"] == "migrated"
    assert {shared["case_no"], closed["case_no"]} == {
        "示城管立〔2026〕0001号",
        "示城管立〔2026〕0002号",
    }
    assert statuses(db, v.values()) == before  # the violations keep their status
    # and from now on they behave like any case's violations
    with pytest.raises(ViolationError, match="withdraw the case first"):
        change_status(db, v["speed"], "dismiss", "officer1", note="误报")


def test_two_officers_at_once_get_one_case_each_or_a_refusal(db, database_url, settings, fleet):
    """The second officer waits for the first one's transaction (row locks on the number
    sequence and the violations), then gets the next number, or is refused if the first
    took the violation."""
    import threading

    from core.db import connect

    v = fleet["v"]
    other = connect(database_url)
    results: dict[str, object] = {}
    try:
        first = db.cursor()
        first_id = K.open_case(first, settings, [v["speed"]], "officer1")  # not committed yet

        def second(name, ids):
            try:
                with transaction(other) as cur:
                    results[name] = K.get_case(cur, K.open_case(cur, settings, ids, "officer2"))
            except K.CaseError as exc:
                results[name] = exc

        worker = threading.Thread(target=second, args=("same", [v["speed"]]))
        worker.start()
        worker.join(1.0)
        assert worker.is_alive(), "the second officer waits for the first one's transaction"
        db.commit()
        worker.join(10)
        assert isinstance(results["same"], K.CaseError)
        assert "case_opened" in str(results["same"])
        second("next", [v["unsealed"]])
        numbers = {read(db, K.get_case, first_id)["case_no"], results["next"]["case_no"]}
        assert len(numbers) == 2 and all(n.endswith(("0001号", "0002号")) for n in numbers)
    finally:
        other.close()


def test_the_same_conduct_goes_into_one_case_under_the_heavier_legal_basis(db, settings, fleet):
    """One act, one charge: a confirmed violation compliance linked to a heavier one of the
    same conduct (absorbed_by) joins its case, and the case cites the heavier provision only."""
    a = fleet["companies"][0]
    t1 = fleet["trucks"][0]
    heavier = insert_violation(
        db, t1, a, "restricted_zone", start=T0 + dt.timedelta(hours=8), status="confirmed"
    )
    lighter = insert_violation(
        db, t1, a, "route_deviation", start=T0 + dt.timedelta(hours=8), status="confirmed"
    )
    with db.cursor() as cur:
        cur.execute("UPDATE violations SET absorbed_by = %s WHERE id = %s", (heavier, lighter))
    db.commit()
    case_id = open_(db, settings, [heavier])
    assert read(db, K.case_violation_ids, case_id) == sorted([heavier, lighter])
    basis = read(db, K.get_case, case_id)["legal_basis"]
    assert basis == settings["cases"]["legal_basis"]["city.restricted_zones"]
    assert statuses(db, [lighter])[lighter][0] == "case_opened"
