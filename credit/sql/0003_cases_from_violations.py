"""Cases for the violations opened as cases before cases existed (issue 14).

Until then a case was only a violation's status (`case_opened`, later `closed`) with a
decision document number. Each decision number becomes one case over its violations (of one
party: a number shared by two companies' violations makes one case each, the later ones
numbered "…（2）"), decided on the day its first `open_case` event was recorded (the number
was given with it), closed when the violations were closed. Reads violations, writes only
credit tables: the violations keep their status. Idempotent: a violation already in a case
is left alone.
"""

from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

_LEGACY = """
SELECT v.id, v.status, v.decision_no,
       (SELECT min(at) FROM violation_events e
        WHERE e.violation_id = v.id AND e.action = 'open_case') AS opened_at,
       (SELECT min(actor) FROM violation_events e
        WHERE e.violation_id = v.id AND e.action = 'open_case') AS opened_by,
       (SELECT min(at) FROM violation_events e
        WHERE e.violation_id = v.id AND e.action = 'close') AS closed_at,
       v.updated_at
FROM violations v
WHERE v.status IN ('case_opened', 'closed')
  AND NOT EXISTS (SELECT 1 FROM credit_case_violations cv
                  WHERE cv.violation_id = v.id AND cv.active)
ORDER BY v.decision_no NULLS LAST, v.id
"""


def apply(cur, settings) -> None:
    from credit.cases import _party, violations_of
    from credit.facts import prefill_facts
    from credit.legal import case_basis
    from credit.numbering import take

    zone = ZoneInfo(str(settings.city["timezone"]))
    cur.execute(_LEGACY)
    legacy = cur.fetchall()
    if not legacy:
        return
    groups: dict[tuple, list[tuple]] = {}
    for row in legacy:
        vid, number = row[0], row[2]
        # no number: one case per violation (the old action always asked for one)
        key = (number,) if number else ("", vid)
        groups.setdefault(key, []).append(row)
    used: dict[str, int] = {}
    for key, rows in groups.items():
        violations = violations_of(cur, [r[0] for r in rows])
        by_party: dict[object, list[dict]] = {}
        for v in violations:
            by_party.setdefault(v["company_id"] or ("truck", v["truck_id"]), []).append(v)
        for members in by_party.values():
            meta = [r for r in rows if r[0] in {m["id"] for m in members}]
            _migrate_one(cur, settings, zone, key[0] or None, members, meta, used,
                         _party, prefill_facts, case_basis, take)  # fmt: skip


def _migrate_one(cur, settings, zone, number, members, meta, used, party_of, facts, basis, take):
    opened = min((r[3] or r[6]) for r in meta)
    closed = all(r[1] == "closed" for r in meta)
    closed_at = max((r[5] or r[6]) for r in meta) if closed else None
    actor = next((r[4] for r in meta if r[4]), None) or "migration"
    local = opened.astimezone(zone)
    first = members[0]
    owner = f"{first['plate']}车辆所有人" if first["company_id"] is None else None
    party = party_of(members, owner)
    if number:
        used[number] = used.get(number, 0) + 1
        if used[number] > 1:
            number = f"{number}（{used[number]}）"
    status = "closed" if closed else ("decided" if number else "open")
    cases = settings["cases"]
    row = {
        **party,
        "case_no": take(cur, settings, "case", local.year),
        "case_year": local.year,
        "facts": facts(cur, settings, members, party["party_name"]),
        "legal_basis": basis(settings, members),
        "decision_no": number,
        "decision_date": local.date() if number else None,
        "authority_name": (cases["authority_name"] or None) if number else None,
        "authority_credit_code": (cases["authority_credit_code"] or None) if number else None,
        "status": status,
        "decided_at": opened if number else None,
        "closed_at": closed_at,
        "created_by": actor,
        "created_at": opened,
    }
    columns = ", ".join(row)  # fixed names from this module, never input
    marks = ", ".join(["%s"] * len(row))
    cur.execute(
        f"INSERT INTO credit_cases ({columns}) VALUES ({marks}) RETURNING id",  # noqa: S608
        list(row.values()),
    )
    case_id = cur.fetchone()[0]
    ids = [m["id"] for m in members]
    for vid in ids:
        cur.execute(
            "INSERT INTO credit_case_violations (case_id, violation_id) VALUES (%s, %s)",
            (case_id, vid),
        )
    after = {
        "status": status,
        "case_no": row["case_no"],
        "decision_no": number,
        "decision_date": row["decision_date"].isoformat() if row["decision_date"] else None,
        "violations": ids,
    }
    cur.execute(
        """INSERT INTO credit_case_events (case_id, at, actor, action, before, after, note)
           VALUES (%s, %s, 'migration', 'migrated', NULL, %s::jsonb, %s)""",
        (
            case_id,
            dt.datetime.now(dt.UTC),
            json.dumps(after, ensure_ascii=False),
            "made from violations opened as cases before cases existed (issue 14); "
            "decision date: the day the decision number was recorded",
        ),
    )
