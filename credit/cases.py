"""Cases (立案 → 处罚决定): an officer's case over confirmed violations of one party.

A case is opened from one or more confirmed violations of the same company (or, for a truck
without a company, the same truck), with its facts prefilled from their evidence
(credit/facts.py), its party from the registry, its legal basis from the city's table
(credit/legal.py) and its number from the city's pattern (credit/numbering.py). It moves

    open ──decide──► decided ──publish──► published ──close──► closed
      └──────────────┴──────────── withdraw (reason) ─────────────┴──► withdrawn

and every change is a row of `credit_case_events` with the fields before and after. The
violations move with it through compliance (`move_for_case`): `case_opened` while in the
case (so they cannot be dismissed), `closed` when it closes, back to `confirmed` and released
(`active = false`) when it is withdrawn. Credit scoring counts a case from `decided_at` until
`withdrawn_at`, in the cycle holding `decision_date`.

Every function here works in the caller's transaction (a cursor): the CLI and the pages
commit, the pages with their audit row in the same transaction. Refusals raise `CaseError`
naming the field, before anything is written.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import psycopg2
import psycopg2.extras

from compliance.violations import ViolationError, move_for_case
from credit.facts import prefill_facts
from credit.legal import case_basis
from credit.numbering import take
from registry.validation import credit_code_valid

STATUSES = ("open", "decided", "published", "closed", "withdrawn")
# What an officer may change while the case is open (after the decision only a withdrawal).
EDITABLE = (
    "party_name",
    "party_credit_code",
    "legal_representative",
    "party_id_no",
    "driver_name",
    "driver_licence",
    "facts",
    "legal_basis",
    "penalty_category",
    "penalty_content",
    "fine_yuan",
)
LIMITS = {"facts": 20_000, "legal_basis": 5_000, "penalty_content": 2_000}
MAX_FINE = decimal.Decimal("1000000000")  # 10 亿元: beyond any muck-truck penalty
# The fields an event records before and after.
TRACKED = (
    *EDITABLE,
    "status",
    "decision_no",
    "decision_date",
    "authority_name",
    "authority_credit_code",
    "withdrawn_reason",
)


class CaseError(ValueError):
    """A case change that is refused; `field` names the form field it is about (or None)."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CaseRef:
    id: int
    case_no: str
    status: str


# ---- reading ------------------------------------------------------------------------------

_VIOLATIONS = """
SELECT v.id, v.truck_id, v.company_id, v.kind, v.stream, v.status, v.started_at, v.ended_at,
       v.worst_value, v.worst_unit, v.severity, v.points, v.lat, v.lon, v.zone_code,
       v.permit_no, v.legal_basis, v.absorbed_by, t.plate, c.name AS company, c.credit_code,
       c.legal_representative
FROM violations v JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id
WHERE v.id = ANY(%s)
ORDER BY v.started_at, v.id
"""


def _dict_cursor(cur):
    return cur.connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor)


def violations_of(cur, violation_ids: list[int]) -> list[dict]:
    with _dict_cursor(cur) as dcur:
        dcur.execute(_VIOLATIONS, (sorted(set(violation_ids)),))
        return [dict(r) for r in dcur.fetchall()]


def get_case(cur, case_id: int) -> dict | None:
    """Every column of the case, with the company's current name, or None."""
    with _dict_cursor(cur) as dcur:
        dcur.execute(
            """SELECT k.*, c.name AS company_name, t.plate AS truck_plate
               FROM credit_cases k LEFT JOIN companies c ON c.id = k.company_id
               LEFT JOIN trucks t ON t.id = k.truck_id WHERE k.id = %s""",
            (case_id,),
        )
        row = dcur.fetchone()
    return dict(row) if row else None


def case_violation_ids(cur, case_id: int, *, active_only: bool = False) -> list[int]:
    cur.execute(
        """SELECT violation_id FROM credit_case_violations
           WHERE case_id = %s AND (active OR NOT %s) ORDER BY violation_id""",
        (case_id, active_only),
    )
    return [r[0] for r in cur.fetchall()]


def case_violations(cur, case_id: int) -> list[dict]:
    """The case's violations (released ones too, with `active`), oldest first."""
    cur.execute(
        "SELECT violation_id, active FROM credit_case_violations WHERE case_id = %s",
        (case_id,),
    )
    active = dict(cur.fetchall())
    rows = violations_of(cur, list(active))
    for row in rows:
        row["active"] = active[row["id"]]
    return rows


def case_events(cur, case_id: int) -> list[dict]:
    with _dict_cursor(cur) as dcur:
        dcur.execute(
            """SELECT at, actor, action, before, after, note FROM credit_case_events
               WHERE case_id = %s ORDER BY at, id""",
            (case_id,),
        )
        return [dict(r) for r in dcur.fetchall()]


def case_of_violation(cur, violation_id: int) -> CaseRef | None:
    """The case a violation is in (not withdrawn), or None."""
    cur.execute(
        """SELECT k.id, k.case_no, k.status FROM credit_case_violations cv
           JOIN credit_cases k ON k.id = cv.case_id
           WHERE cv.violation_id = %s AND cv.active""",
        (violation_id,),
    )
    row = cur.fetchone()
    return CaseRef(*row) if row else None


def list_cases(
    cur,
    *,
    status: str | None = None,
    company_id: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[dict], int]:
    """Newest first, with the number of violations; and the total matching."""
    where = """WHERE (%(status)s::text IS NULL OR k.status = %(status)s)
                 AND (%(company)s::bigint IS NULL OR k.company_id = %(company)s)"""
    params = {"status": status, "company": company_id, "limit": limit, "offset": offset}
    with _dict_cursor(cur) as dcur:
        dcur.execute(
            f"""SELECT k.id, k.case_no, k.status, k.party_name, k.party_credit_code,
                       k.party_credit_code_valid, k.company_id, k.decision_no,
                       k.decision_date, k.fine_yuan, k.penalty_category, k.created_at,
                       k.created_by, k.demo,
                       (SELECT count(*) FROM credit_case_violations cv
                        WHERE cv.case_id = k.id AND cv.active) AS violations
                FROM credit_cases k {where}
                ORDER BY k.created_at DESC, k.id DESC
                LIMIT %(limit)s OFFSET %(offset)s""",  # noqa: S608 (fixed text)
            params,
        )
        rows = [dict(r) for r in dcur.fetchall()]
        dcur.execute(f"SELECT count(*) AS n FROM credit_cases k {where}", params)  # noqa: S608
        total = dcur.fetchone()["n"]
    return rows, total


# ---- helpers ------------------------------------------------------------------------------


def _json_value(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return value


def snapshot(case: dict, keys=TRACKED) -> dict:
    return {k: _json_value(case.get(k)) for k in keys}


def _event(cur, case_id: int, actor: str, action: str, before, after, note=None) -> None:
    cur.execute(
        """INSERT INTO credit_case_events (case_id, actor, action, before, after, note)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s)""",
        (
            case_id,
            actor,
            action,
            None if before is None else json.dumps(before, ensure_ascii=False),
            None if after is None else json.dumps(after, ensure_ascii=False),
            note,
        ),
    )


def local_today(settings: Any) -> dt.date:
    return dt.datetime.now(ZoneInfo(str(settings.city["timezone"]))).date()


def parse_fine(value: Any) -> decimal.Decimal | None:
    """元, two decimals; '' or None is no fine. CaseError(field='fine_yuan') otherwise."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        fine = decimal.Decimal(str(value).strip().replace(",", ""))
    except decimal.InvalidOperation:
        raise CaseError(f"fine {value!r} is not an amount in 元", "fine_yuan") from None
    if not fine.is_finite() or fine < 0 or fine > MAX_FINE:
        raise CaseError(f"fine {value!r} must be between 0 and {MAX_FINE} 元", "fine_yuan")
    return fine.quantize(decimal.Decimal("0.01"))


def _clean(settings: Any, fields: dict[str, Any]) -> dict[str, Any]:
    """The editable fields given, stripped and checked; unknown names are refused."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name not in EDITABLE:
            raise CaseError(f"{name} cannot be changed on a case", name)
        if name == "fine_yuan":
            out[name] = parse_fine(value)
            continue
        if value is not None and not isinstance(value, str):
            raise CaseError(f"{name} must be text", name)
        text = (value or "").strip()
        limit = LIMITS.get(name, 200)
        if len(text) > limit:
            raise CaseError(f"{name} is longer than {limit} characters", name)
        if (
            name == "penalty_category"
            and text
            and text not in settings["cases"]["penalty_categories"]
        ):
            choices = "、".join(settings["cases"]["penalty_categories"])
            raise CaseError(f"penalty category {text!r} is not one of {choices}", name)
        if name == "party_name" and not text:
            raise CaseError("the party needs a name", name)
        if name == "party_credit_code":
            text = text.upper()
        nullable = name not in ("facts", "legal_basis", "penalty_content", "party_name")
        out[name] = text or (None if nullable else "")
    if "party_credit_code" in out:
        code = out["party_credit_code"]
        # invalid codes are kept and flagged, never refused (real registries hold them)
        out["party_credit_code_valid"] = None if code is None else credit_code_valid(code)
    return out


def _lock(cur, case_id: int) -> dict:
    cur.execute("SELECT id FROM credit_cases WHERE id = %s FOR UPDATE", (case_id,))
    if cur.fetchone() is None:
        raise CaseError(f"case {case_id} does not exist")
    case = get_case(cur, case_id)
    assert case is not None
    return case


def _move(cur, ids, move, actor, case_no, **kw) -> None:
    try:
        move_for_case(cur, ids, move, actor, case_no=case_no, **kw)
    except ViolationError as exc:
        raise CaseError(str(exc), "violations") from None


def _update(cur, case_id: int, values: dict[str, Any]) -> None:
    from psycopg2 import sql

    cur.execute(
        sql.SQL("UPDATE credit_cases SET {}, updated_at = now() WHERE id = %s").format(
            sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in values)
        ),
        (*values.values(), case_id),
    )


# ---- the party ----------------------------------------------------------------------------


def _party(violations: list[dict], party_name: str | None) -> dict[str, Any]:
    """The party of a case over these violations: their one company from the registry, or
    (no company) the one truck's owner named by the officer."""
    companies = {v["company_id"] for v in violations}
    if len(companies) > 1:
        named = sorted({v["company"] or f"#{v['company_id']}" for v in violations})
        raise CaseError(
            "the violations belong to different companies (" + "、".join(named) + "): a case "
            "covers one party",
            "violations",
        )
    trucks = {v["truck_id"] for v in violations}
    first = violations[0]
    if first["company_id"] is not None:
        code = first["credit_code"]
        return {
            "party_kind": "company",
            "company_id": first["company_id"],
            "truck_id": first["truck_id"] if len(trucks) == 1 else None,
            "party_name": first["company"],
            "party_credit_code": code,
            "party_credit_code_valid": None if code is None else credit_code_valid(code),
            "legal_representative": first["legal_representative"],
        }
    if len(trucks) > 1:
        plates = "、".join(sorted({v["plate"] for v in violations}))
        raise CaseError(
            f"the violations are of trucks without a company ({plates}): a case without a "
            "company covers one truck",
            "violations",
        )
    if not (party_name or "").strip():
        raise CaseError(
            f"truck {first['plate']} has no company: name the party (party_name)", "party_name"
        )
    return {
        "party_kind": "individual",
        "company_id": None,
        "truck_id": first["truck_id"],
        "party_name": party_name.strip(),
        "party_credit_code": None,
        "party_credit_code_valid": None,
        "legal_representative": None,
    }


# ---- the lifecycle ------------------------------------------------------------------------


def _same_conduct(cur, ids: list[int]) -> set[int]:
    """Confirmed violations that compliance linked to one of `ids` as the same conduct
    (`absorbed_by`, compliance/concurrence.py) and that are in no case yet: they join the
    case, one act one charge (一事不二罚)."""
    cur.execute(
        """SELECT v.id FROM violations v
           WHERE v.absorbed_by = ANY(%s) AND v.status = 'confirmed'
             AND NOT EXISTS (SELECT 1 FROM credit_case_violations cv
                             WHERE cv.violation_id = v.id AND cv.active)""",
        (ids,),
    )
    return {row[0] for row in cur.fetchall()}


def open_case(
    cur,
    settings: Any,
    violation_ids: list[int],
    actor: str,
    *,
    fields: dict[str, Any] | None = None,
    note: str | None = None,
    demo: bool = False,
) -> int:
    """Open a case over confirmed violations of one party; returns its id. `fields` may set
    any of EDITABLE (party_name is required when the truck has no company); the rest is
    prefilled."""
    ids = sorted({int(v) for v in violation_ids})
    if not ids:
        raise CaseError("choose at least one confirmed violation", "violations")
    ids = sorted(set(ids) | _same_conduct(cur, ids))
    violations = violations_of(cur, ids)
    missing = sorted(set(ids) - {v["id"] for v in violations})
    if missing:
        raise CaseError(f"violation {', '.join(map(str, missing))} does not exist", "violations")
    wrong = [f"{v['id']} ({v['status']})" for v in violations if v["status"] != "confirmed"]
    if wrong:
        raise CaseError(
            f"only confirmed violations go into a case: {', '.join(wrong)}", "violations"
        )
    given = dict(fields or {})
    party = _party(violations, given.get("party_name"))
    year = local_today(settings).year
    case_no = take(cur, settings, "case", year)
    row = {
        **party,
        "facts": prefill_facts(cur, settings, violations, party["party_name"]),
        # One act, one charge: the heavier charge's provision, not also the absorbed ones'.
        "legal_basis": case_basis(
            settings, [v for v in violations if v["absorbed_by"] not in ids] or violations
        ),
        "penalty_content": "",
    }
    row.update(_clean(settings, given))
    row.update(case_no=case_no, case_year=year, created_by=actor, demo=demo)
    from psycopg2 import sql

    cur.execute(
        sql.SQL("INSERT INTO credit_cases ({}) VALUES ({}) RETURNING id").format(
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(sql.Placeholder() * len(row)),
        ),
        list(row.values()),
    )
    case_id = cur.fetchone()[0]
    _move(cur, ids, "open_case", actor, case_no, note=note)
    psycopg2.extras.execute_values(
        cur,
        "INSERT INTO credit_case_violations (case_id, violation_id) VALUES %s",
        [(case_id, vid) for vid in ids],
    )
    case = get_case(cur, case_id)
    _event(cur, case_id, actor, "opened", None, {**snapshot(case), "violations": ids}, note)
    return case_id


def edit_case(cur, settings: Any, case_id: int, actor: str, fields: dict[str, Any]) -> bool:
    """Change editable fields of an open case; one 'edited' event with what changed. Returns
    whether anything changed."""
    case = _lock(cur, case_id)
    if case["status"] != "open":
        raise CaseError(
            f"case {case['case_no']} is {case['status']}: only an open case is edited "
            "(withdraw it to correct a decision)"
        )
    values = _clean(settings, fields)
    changed = {k: v for k, v in values.items() if case.get(k) != v}
    if not changed:
        return False
    _update(cur, case_id, changed)
    keys = [k for k in changed if k in TRACKED or k == "party_credit_code_valid"]
    before = {k: _json_value(case.get(k)) for k in keys}
    after = {k: _json_value(changed[k]) for k in keys}
    _event(cur, case_id, actor, "edited", before, after)
    return True


def decide(
    cur,
    settings: Any,
    case_id: int,
    actor: str,
    *,
    decision_no: str | None = None,
    decision_date: dt.date | None = None,
    fields: dict[str, Any] | None = None,
    note: str | None = None,
    require_penalty: bool = True,
) -> str:
    """Record the penalty decision (处罚决定) of an open case; returns the decision document
    number (given, or the next one of the city's pattern). `fields` may still set the
    penalty and other editable fields. The decision date is today unless given, never in
    the future; a fine (元) is required for the category 罚款."""
    case = _lock(cur, case_id)
    if case["status"] != "open":
        raise CaseError(f"case {case['case_no']} is {case['status']}: only an open case is decided")
    values = _clean(settings, fields or {})
    merged = {**case, **values}
    today = local_today(settings)
    decision_date = decision_date or today
    if decision_date > today:
        raise CaseError(
            f"decision date {decision_date} is in the future (today is {today})", "decision_date"
        )
    if (
        decision_date
        < case["created_at"].astimezone(ZoneInfo(str(settings.city["timezone"]))).date()
    ):
        raise CaseError(
            f"decision date {decision_date} is before the case was opened", "decision_date"
        )
    if require_penalty:
        if not merged.get("penalty_category"):
            raise CaseError("choose the penalty category (处罚类别)", "penalty_category")
        if merged["penalty_category"] == "罚款" and not merged.get("fine_yuan"):
            raise CaseError("a fine (罚款) needs its amount in 元", "fine_yuan")
        if not (merged.get("penalty_content") or "").strip():
            values["penalty_content"] = _penalty_text(merged)
        if not (merged.get("legal_basis") or "").strip():
            raise CaseError("the decision needs its legal basis (处罚依据)", "legal_basis")
    number = (decision_no or "").strip()
    if len(number) > 200:
        raise CaseError("the decision document number is longer than 200 characters", "decision_no")
    number = (
        number or case.get("decision_no") or take(cur, settings, "decision", decision_date.year)
    )
    cur.execute(
        "SELECT case_no FROM credit_cases WHERE decision_no = %s AND id <> %s",
        (number, case_id),
    )
    clash = cur.fetchone()
    if clash:
        raise CaseError(
            f"decision document number {number} is already used by case {clash[0]}",
            "decision_no",
        )
    cases = settings["cases"]
    values.update(
        status="decided",
        decision_no=number,
        decision_date=decision_date,
        authority_name=cases["authority_name"] or None,
        authority_credit_code=cases["authority_credit_code"] or None,
    )
    cur.execute("SELECT now()")  # the transaction's time, like every other stamp
    values["decided_at"] = cur.fetchone()[0]
    _update(cur, case_id, values)
    _move(cur, case_violation_ids(cur, case_id, active_only=True), "decision", actor,
          case["case_no"], decision_no=number)  # fmt: skip
    after = get_case(cur, case_id)
    _event(cur, case_id, actor, "decided", snapshot(case), snapshot(after), note)
    return number


def _penalty_text(case: dict) -> str:
    category = case["penalty_category"]
    if case.get("fine_yuan"):
        return f"{category}：罚款人民币{case['fine_yuan']:,.2f}元"
    return str(category)


def _step(
    cur, case_id: int, actor: str, verb: str, allowed: set[str], target: str, note=None
) -> dict:
    case = _lock(cur, case_id)
    if case["status"] not in allowed:
        raise CaseError(
            f"cannot {verb} case {case['case_no']}: it is {case['status']} "
            f"(expected {' or '.join(sorted(allowed))})"
        )
    stamp = {"published": "published_at", "closed": "closed_at"}[target]
    cur.execute(
        f"UPDATE credit_cases SET status = %s, {stamp} = now(), updated_at = now() "  # noqa: S608
        "WHERE id = %s",
        (target, case_id),
    )
    _event(cur, case_id, actor, target, {"status": case["status"]}, {"status": target}, note)
    return case


def publish(cur, case_id: int, actor: str, note: str | None = None) -> None:
    """Published (双公示): the decision is made public."""
    _step(cur, case_id, actor, "publish", {"decided"}, "published", note)


def close(cur, case_id: int, actor: str, note: str | None = None) -> None:
    """Closed (结案): the penalty carried out; its violations are closed with it."""
    case = _step(cur, case_id, actor, "close", {"decided", "published"}, "closed", note)
    _move(cur, case_violation_ids(cur, case_id, active_only=True), "close", actor, case["case_no"])


def withdraw(cur, case_id: int, actor: str, reason: str) -> None:
    """Withdrawn (撤销) with a reason: its violations go back to confirmed and are released
    (`active = false`, the history kept); a decided case stops counting for credit from
    `withdrawn_at`."""
    reason = (reason or "").strip()
    if not reason:
        raise CaseError("a withdrawal needs a reason", "reason")
    if len(reason) > 2000:
        raise CaseError("the reason is longer than 2000 characters", "reason")
    case = _lock(cur, case_id)
    if case["status"] == "withdrawn":
        raise CaseError(f"case {case['case_no']} is already withdrawn")
    ids = case_violation_ids(cur, case_id, active_only=True)
    cur.execute(
        """UPDATE credit_cases SET status = 'withdrawn', withdrawn_reason = %s,
               withdrawn_at = now(), updated_at = now() WHERE id = %s""",
        (reason, case_id),
    )
    cur.execute("UPDATE credit_case_violations SET active = false WHERE case_id = %s", (case_id,))
    _move(cur, ids, "release_case", actor, case["case_no"], note=reason)
    _event(
        cur,
        case_id,
        actor,
        "withdrawn",
        {"status": case["status"], "violations": ids},
        {"status": "withdrawn", "withdrawn_reason": reason},
        reason,
    )


def record_notice(cur, case_id: int, actor: str, notice: str, sha256: str, size: int) -> None:
    """A notice generated (告知书 / 决定书): who, when, its checksum."""
    _event(cur, case_id, actor, "notice", None, {"notice": notice, "sha256": sha256, "bytes": size})


# ---- the violation actions of the API, on top of cases -------------------------------------


def open_case_for_violation(
    cur, settings: Any, violation_id: int, actor: str, decision_no: str, note: str | None = None
) -> int:
    """The violation API's `open_case` (decision number given): a one-violation case,
    opened and decided at once with that number and today's date; its penalty is not
    recorded (the full form is the case page). Returns the case id."""
    number = (decision_no or "").strip()
    if not number:
        raise CaseError("opening a case needs the decision document number", "decision_no")
    case_id = open_case(cur, settings, [violation_id], actor, note=note)
    decide(
        cur,
        settings,
        case_id,
        actor,
        decision_no=number,
        note="opened and decided in one step by the violation's open_case action",
        require_penalty=False,
    )
    return case_id


def close_case_of_violation(cur, violation_id: int, actor: str, note: str | None = None) -> int:
    """The violation API's `close`: closes the case the violation is in (all its violations)."""
    ref = case_of_violation(cur, violation_id)
    if ref is None:
        cur.execute("SELECT status FROM violations WHERE id = %s", (violation_id,))
        row = cur.fetchone()
        status = row[0] if row else "missing"
        raise CaseError(f"cannot close a violation that is {status}: it is in no case")
    close(cur, ref.id, actor, note)
    return ref.id
