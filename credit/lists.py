"""Lists (名单): the watch (重点关注/黄名单), red and black lists other departments act on.

The listing job evaluates the scheme's rules (score thresholds and the counting rules of
`[[credit.rules]]`) over the decided cases of the current cycle and proposes entries; with
`credit.signoff_required` an entry waits (pending) until a credit officer signs it off, since
joint punishment (联合惩戒) needs a person answerable for it. The same job expires entries
whose planned removal date has come. Every change is an event of the entry (the audit).

A proposal is not made twice for the same cases: an entry of this subject, list and cycle
whose cases already include every case that triggers the rule now (signed off, rejected or
removed by an officer) stands; a case decided later makes a new proposal.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from compliance.pipeline import PIPELINE
from credit.authority import authority
from credit.scoring import CaseRecord, Scheme, cases_by_subject, load_cases, score_subject

LIST_TYPES = ("watch", "red", "black")
SEVERITY = {name: i for i, name in enumerate(LIST_TYPES)}
REMOVAL_REASONS = ("expiry", "credit_repair", "appeal_upheld")
KIND_LABELS = {rule.kind: rule.label["zh"] for rule in PIPELINE}
LINE_NAMES = {"watch": "重点关注", "red": "警示", "black": "失信"}
_LOCK = 0x63726564  # "cred": one evaluation at a time across collectors


class ListError(ValueError):
    """A list action that is not allowed; the message says why."""


@dataclass
class Proposal:
    subject: str
    subject_key: str
    list_type: str
    rules: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    case_ids: set[int] = field(default_factory=set)
    cycle_start: dt.date | None = None


def _threshold_key(subject: str, list_type: str) -> str:
    return list_type if subject == "company" else f"{subject}_{list_type}"


def _matches(rule: dict, case: CaseRecord, subject: str, key: str) -> int:
    """How many of the case's violations match the rule (for this subject)."""
    n = 0
    for v in case.violations:
        if subject == "truck" and str(v.truck_id) != key:
            continue
        if rule["kind"] and v.kind != rule["kind"]:
            continue
        if rule["flag"] and rule["flag"] not in v.flags:
            continue
        n += 1
    return n


def proposals(settings: Any, cases: Sequence[CaseRecord], now: dt.datetime) -> list[Proposal]:
    """What the rules put on which list at `now` (pure: the job stores them)."""
    scheme = Scheme.from_settings(settings)
    credit = settings["credit"]
    thresholds = credit["thresholds"]
    start, end = scheme.cycle_of(scheme.local_day(now))
    out: dict[tuple[str, str, str], Proposal] = {}

    def add(subject, key, list_type, rule, reason, case_ids):
        p = out.setdefault(
            (subject, key, list_type), Proposal(subject, key, list_type, cycle_start=start)
        )
        p.rules.append(rule)
        p.reasons.append(reason)
        p.case_ids.update(case_ids)

    for (subject, key), own in cases_by_subject(scheme, cases).items():
        in_force = [
            c for c in own if c.decision_date and start <= c.decision_date < end and c.in_force(now)
        ]
        if not in_force:
            continue
        score = score_subject(scheme, own, subject, key, now)
        # The most severe list the score reaches (a company at 65 is blacklisted, not
        # also put on the watch and red lists).
        for list_type in reversed(LIST_TYPES):
            limit = thresholds.get(_threshold_key(subject, list_type))
            if limit is not None and score.score <= limit:
                add(
                    subject,
                    key,
                    list_type,
                    f"score_{list_type}",
                    f"信用分 {score.score}，不高于{LINE_NAMES[list_type]}线 {limit}",
                    [c.id for c in in_force],
                )
                break
        for rule in credit["rules"]:
            if rule["subject"] != subject:
                continue
            hits = {c.id: _matches(rule, c, subject, key) for c in in_force}
            hits = {cid: n for cid, n in hits.items() if n}
            counted = len(hits) if rule["count"] == "cases" else sum(hits.values())
            if counted >= int(rule["at_least"]):
                unit = "件已决定案件" if rule["count"] == "cases" else "次违法"
                what = KIND_LABELS.get(rule["kind"], rule["kind"]) if rule["kind"] else "各类违法"
                flag = f"（{rule['flag']}）" if rule["flag"] else ""
                add(
                    subject,
                    key,
                    rule["list"],
                    rule["name"],
                    f"本周期{what}{flag} {counted} {unit}，达到 {rule['at_least']}"
                    f"（规则 {rule['name']}）",
                    hits,
                )
    return list(out.values())


def _event(cur, entry_id: int, actor: str, action: str, before=None, after=None, note=None):
    cur.execute(
        """INSERT INTO credit_list_events (entry_id, actor, action, before, after, note)
           VALUES (%s, %s, %s, %s::jsonb, %s::jsonb, %s)""",
        (
            entry_id,
            actor,
            action,
            json.dumps(before, ensure_ascii=False, default=str) if before is not None else None,
            json.dumps(after, ensure_ascii=False, default=str) if after is not None else None,
            note,
        ),
    )


def _subject_row(cur, subject: str, key: str) -> dict[str, Any] | None:
    """Name, credit code, legal representative and company of a subject."""
    if subject == "company":
        cur.execute(
            "SELECT id, name, credit_code, legal_representative FROM companies WHERE id = %s",
            (int(key),),
        )
        row = cur.fetchone()
        return row and dict(company_id=row[0], name=row[1], code=row[2], rep=row[3], truck=None)
    if subject == "truck":
        cur.execute(
            """SELECT t.id, t.plate, t.company_id, c.legal_representative FROM trucks t
               LEFT JOIN companies c ON c.id = t.company_id WHERE t.id = %s""",
            (int(key),),
        )
        row = cur.fetchone()
        return row and dict(company_id=row[2], name=row[1], code=row[1], rep=row[3], truck=row[0])
    cur.execute(
        """SELECT driver_name, company_id FROM credit_cases WHERE driver_licence = %s
           ORDER BY decided_at DESC NULLS LAST LIMIT 1""",
        (key,),
    )
    row = cur.fetchone()
    return row and dict(company_id=row[1], name=row[0] or key, code=key, rep=None, truck=None)


def _duration(settings: Any, subject: str, list_type: str) -> int:
    return int(settings["credit"]["durations"][_threshold_key(subject, list_type)])


def _basis(settings: Any, subject: str, list_type: str) -> str:
    basis = settings["credit"]["basis"]
    return basis.get(_threshold_key(subject, list_type)) or basis[list_type]


def _today(settings: Any, now: dt.datetime) -> dt.date:
    return Scheme.from_settings(settings).local_day(now)


def _store_proposal(cur, settings: Any, p: Proposal, now: dt.datetime) -> int | None:
    cur.execute(
        """SELECT e.id, array_remove(array_agg(ec.case_id), NULL) FROM credit_list_entries e
           LEFT JOIN credit_list_entry_cases ec ON ec.entry_id = e.id
           WHERE e.subject_kind = %s AND e.subject_key = %s AND e.list_type = %s
             AND (e.status IN ('pending', 'active') OR e.cycle_start = %s)
           GROUP BY e.id""",
        (p.subject, p.subject_key, p.list_type, p.cycle_start),
    )
    for _entry, case_ids in cur.fetchall():
        if p.case_ids <= set(case_ids):
            return None  # these cases are already behind an entry: decided once
    cur.execute(
        """SELECT 1 FROM credit_list_entries WHERE subject_kind = %s AND subject_key = %s
             AND list_type = %s AND status IN ('pending', 'active')""",
        (p.subject, p.subject_key, p.list_type),
    )
    if cur.fetchone():
        return None  # an entry is open: newer cases join it when it is signed off or renewed
    subject = _subject_row(cur, p.subject, p.subject_key)
    if subject is None:
        return None
    credit = settings["credit"]
    immediate = not credit["signoff_required"]
    today = _today(settings, now)
    cur.execute("SELECT bool_or(demo) FROM credit_cases WHERE id = ANY(%s)", (sorted(p.case_ids),))
    demo = bool(cur.fetchone()[0])
    cur.execute(
        """INSERT INTO credit_list_entries (subject_kind, subject_key, company_id, truck_id,
               driver_licence, subject_name, credit_code, legal_representative, list_type,
               reason, rules, legal_basis, authority_name, authority_credit_code, cycle_start,
               status, automatic, proposed_by, proposed_at, signed_off_by, signed_off_at,
               listed_on, planned_removal_on, demo)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, true,
                   'system', %s, %s, %s, %s, %s, %s)
           RETURNING id""",
        (
            p.subject,
            p.subject_key,
            subject["company_id"],
            subject["truck"],
            p.subject_key if p.subject == "driver" else None,
            subject["name"],
            subject["code"],
            subject["rep"],
            p.list_type,
            "；".join(p.reasons),
            p.rules,
            _basis(settings, p.subject, p.list_type),
            *authority(settings),
            p.cycle_start,
            "active" if immediate else "pending",
            now,
            "system" if immediate else None,
            now if immediate else None,
            today if immediate else None,
            today + dt.timedelta(days=_duration(settings, p.subject, p.list_type))
            if immediate
            else None,
            demo,
        ),
    )
    entry_id = cur.fetchone()[0]
    cur.execute(
        "INSERT INTO credit_list_entry_cases (entry_id, case_id) SELECT %s, unnest(%s::bigint[])",
        (entry_id, sorted(p.case_ids)),
    )
    _event(
        cur,
        entry_id,
        "system",
        "listed" if immediate else "proposed",
        None,
        {"status": "active" if immediate else "pending", "list_type": p.list_type},
        "；".join(p.reasons),
    )
    return entry_id


@dataclass
class Evaluation:
    proposed: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)


def evaluate(conn, settings: Any, now: dt.datetime | None = None) -> Evaluation:
    """The listing job: propose what the rules say, drop pending proposals that no longer
    hold (a case withdrawn meanwhile), expire entries whose planned removal date has come.
    One transaction, one evaluation at a time. Commits."""
    now = now or dt.datetime.now(dt.UTC)
    result = Evaluation()
    today = _today(settings, now)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        found = proposals(settings, load_cases(cur), now)
        holding = {(p.subject, p.subject_key, p.list_type) for p in found}
        for p in found:
            entry = _store_proposal(cur, settings, p, now)
            if entry is not None:
                result.proposed.append(entry)
        cur.execute(
            """SELECT id, subject_kind, subject_key, list_type FROM credit_list_entries
               WHERE status = 'pending' AND automatic FOR UPDATE"""
        )
        for entry_id, subject, key, list_type in cur.fetchall():
            if (subject, key, list_type) not in holding:
                cur.execute(
                    """UPDATE credit_list_entries SET status = 'rejected',
                           removal_reason = 'no_longer_holds', updated_at = now()
                       WHERE id = %s""",
                    (entry_id,),
                )
                _event(
                    cur,
                    entry_id,
                    "system",
                    "dropped",
                    {"status": "pending"},
                    {"status": "rejected"},
                    "the rule no longer holds (a case was withdrawn)",
                )
                result.dropped.append(entry_id)
        cur.execute(
            """UPDATE credit_list_entries SET status = 'removed', removed_on = planned_removal_on,
                   removal_reason = 'expiry', updated_at = now()
               WHERE status = 'active' AND planned_removal_on <= %s
               RETURNING id, planned_removal_on""",
            (today,),
        )
        for entry_id, on in cur.fetchall():
            _event(
                cur,
                entry_id,
                "system",
                "expired",
                {"status": "active"},
                {"status": "removed", "removed_on": on.isoformat()},
                "planned removal date reached",
            )
            result.expired.append(entry_id)
    conn.commit()
    return result


def _locked(cur, entry_id: int) -> dict[str, Any]:
    cur.execute(
        """SELECT id, status, subject_kind, list_type, listed_on, planned_removal_on
           FROM credit_list_entries WHERE id = %s FOR UPDATE""",
        (entry_id,),
    )
    row = cur.fetchone()
    if row is None:
        raise ListError(f"list entry {entry_id} does not exist")
    return dict(
        zip(("id", "status", "subject", "list_type", "listed_on", "planned"), row, strict=True)
    )


def sign_off(conn, settings: Any, entry_id: int, actor: str, note: str | None = None) -> dict:
    """A credit officer's sign-off: the pending entry takes effect today."""
    now = dt.datetime.now(dt.UTC)
    today = _today(settings, now)
    try:
        with conn.cursor() as cur:
            entry = _locked(cur, entry_id)
            if entry["status"] != "pending":
                raise ListError(f"entry {entry_id} is {entry['status']}, not waiting for sign-off")
            planned = today + dt.timedelta(
                days=_duration(settings, entry["subject"], entry["list_type"])
            )
            cur.execute(
                """UPDATE credit_list_entries SET status = 'active', signed_off_by = %s,
                       signed_off_at = %s, listed_on = %s, planned_removal_on = %s,
                       updated_at = now() WHERE id = %s""",
                (actor, now, today, planned, entry_id),
            )
            after = {"status": "active", "listed_on": today, "planned_removal_on": planned}
            _event(cur, entry_id, actor, "signed_off", {"status": "pending"}, after, note)
    except Exception:
        conn.rollback()
        raise
    conn.commit()
    return after


def reject(conn, entry_id: int, actor: str, note: str) -> None:
    """A credit officer refuses a proposal (the reason is required and kept)."""
    if not (note and note.strip()):
        raise ListError("rejecting a proposal needs a reason")
    try:
        with conn.cursor() as cur:
            entry = _locked(cur, entry_id)
            if entry["status"] != "pending":
                raise ListError(f"entry {entry_id} is {entry['status']}, not waiting for sign-off")
            cur.execute(
                """UPDATE credit_list_entries SET status = 'rejected', removal_reason = 'rejected',
                       removal_note = %s, updated_at = now() WHERE id = %s""",
                (note.strip(), entry_id),
            )
            _event(
                cur,
                entry_id,
                actor,
                "rejected",
                {"status": "pending"},
                {"status": "rejected"},
                note,
            )
    except Exception:
        conn.rollback()
        raise
    conn.commit()


def remove(conn, settings: Any, entry_id: int, actor: str, reason: str, note: str) -> None:
    """Take an entry in force off its list early: credit repair (信用修复) or an upheld
    appeal (申诉成立); expiry is the job's."""
    if reason not in ("credit_repair", "appeal_upheld"):
        raise ListError("the reason is credit_repair or appeal_upheld (expiry is automatic)")
    if not (note and note.strip()):
        raise ListError("removing an entry needs a note (the repair or appeal decision)")
    today = _today(settings, dt.datetime.now(dt.UTC))
    try:
        with conn.cursor() as cur:
            entry = _locked(cur, entry_id)
            if entry["status"] != "active":
                raise ListError(f"entry {entry_id} is {entry['status']}, not in force")
            cur.execute(
                """UPDATE credit_list_entries SET status = 'removed', removed_on = %s,
                       removal_reason = %s, removal_note = %s, updated_at = now()
                   WHERE id = %s""",
                (today, reason, note.strip(), entry_id),
            )
            _event(
                cur,
                entry_id,
                actor,
                "removed",
                {"status": "active"},
                {"status": "removed", "removal_reason": reason, "removed_on": today},
                note,
            )
    except Exception:
        conn.rollback()
        raise
    conn.commit()


ENTRY_COLUMNS = (
    "id",
    "subject_kind",
    "subject_key",
    "company_id",
    "truck_id",
    "driver_licence",
    "subject_name",
    "credit_code",
    "legal_representative",
    "list_type",
    "reason",
    "rules",
    "legal_basis",
    "authority_name",
    "authority_credit_code",
    "cycle_start",
    "status",
    "automatic",
    "proposed_by",
    "proposed_at",
    "signed_off_by",
    "signed_off_at",
    "listed_on",
    "planned_removal_on",
    "removed_on",
    "removal_reason",
    "removal_note",
    "demo",
)


def list_entries(
    conn,
    *,
    status: str | Sequence[str] | None = None,
    list_type: str | None = None,
    company_id: int | None = None,
    subject: str | None = None,
    listed_from: dt.date | None = None,
    listed_to: dt.date | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Entries, newest first, each with its case ids and numbers."""
    statuses = [status] if isinstance(status, str) else (list(status) if status else None)
    cols = ", ".join(f"e.{c}" for c in ENTRY_COLUMNS)
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT {cols},
                       coalesce(array_agg(c.id ORDER BY c.id) FILTER (WHERE c.id IS NOT NULL), '{{}}'),
                       coalesce(array_agg(c.case_no ORDER BY c.id) FILTER (WHERE c.id IS NOT NULL), '{{}}'),
                       coalesce(array_agg(c.decision_no ORDER BY c.id) FILTER (WHERE c.id IS NOT NULL), '{{}}')
                FROM credit_list_entries e
                LEFT JOIN credit_list_entry_cases ec ON ec.entry_id = e.id
                LEFT JOIN credit_cases c ON c.id = ec.case_id
                WHERE (%(statuses)s::text[] IS NULL OR e.status = ANY(%(statuses)s))
                  AND (%(list_type)s::text IS NULL OR e.list_type = %(list_type)s)
                  AND (%(company)s::bigint IS NULL OR e.company_id = %(company)s)
                  AND (%(subject)s::text IS NULL OR e.subject_kind = %(subject)s)
                  AND (%(from)s::date IS NULL OR e.listed_on >= %(from)s)
                  AND (%(to)s::date IS NULL OR e.listed_on <= %(to)s)
                GROUP BY e.id ORDER BY e.proposed_at DESC, e.id DESC LIMIT %(limit)s""",  # noqa: S608 (constant column list)
            {
                "statuses": statuses,
                "list_type": list_type,
                "company": company_id,
                "subject": subject,
                "from": listed_from,
                "to": listed_to,
                "limit": limit,
            },
        )
        rows = []
        for row in cur.fetchall():
            entry = dict(zip(ENTRY_COLUMNS, row[: len(ENTRY_COLUMNS)], strict=True))
            entry["case_ids"], entry["case_nos"], entry["decision_nos"] = row[len(ENTRY_COLUMNS) :]
            rows.append(entry)
    conn.rollback()
    return rows


def entry_events(conn, entry_id: int) -> list[dict[str, Any]]:
    with conn.cursor() as cur:
        cur.execute(
            """SELECT at, actor, action, before, after, note FROM credit_list_events
               WHERE entry_id = %s ORDER BY at, id""",
            (entry_id,),
        )
        rows = [
            dict(zip(("at", "actor", "action", "before", "after", "note"), r, strict=True))
            for r in cur
        ]
    conn.rollback()
    return rows


def flagged(cur) -> dict[str, dict[int, str]]:
    """What the maps and truck pages flag: company id → and truck id → the most severe list
    in force over it (a listed company flags each of its trucks)."""
    cur.execute(
        """SELECT subject_kind, company_id, truck_id, list_type FROM credit_list_entries
           WHERE status = 'active' AND subject_kind IN ('company', 'truck')"""
    )
    companies: dict[int, str] = {}
    trucks: dict[int, str] = {}
    for subject, company_id, truck_id, list_type in cur.fetchall():
        target, key = (companies, company_id) if subject == "company" else (trucks, truck_id)
        if key is not None and SEVERITY[list_type] >= SEVERITY.get(target.get(key, ""), -1):
            target[key] = list_type
    return {"companies": companies, "trucks": trucks}


def truck_flag(cur, truck_id: int) -> str | None:
    """The most severe list in force over this truck or its company, or None."""
    flags = flagged(cur)
    cur.execute("SELECT company_id FROM trucks WHERE id = %s", (truck_id,))
    row = cur.fetchone()
    found = [flags["trucks"].get(truck_id), flags["companies"].get(row[0]) if row else None]
    found = [f for f in found if f]
    return max(found, key=SEVERITY.__getitem__) if found else None


def permit_import_warnings(conn, permit_numbers: Sequence[str], *, source: str = "") -> list[str]:
    """After a permit import: a warning for each permit whose company is on the blacklist
    (the permit stays stored). Kept in credit_permit_warnings. Commits."""
    if not permit_numbers:
        return []
    with conn.cursor() as cur:
        cur.execute(
            """SELECT p.number, p.company_id, e.id, e.subject_name, e.listed_on,
                      e.planned_removal_on
               FROM permits p JOIN credit_list_entries e
                 ON e.company_id = p.company_id AND e.subject_kind = 'company'
                AND e.list_type = 'black' AND e.status = 'active'
               WHERE p.number = ANY(%s) ORDER BY p.number""",
            (list(permit_numbers),),
        )
        warnings = []
        for number, company_id, entry_id, name, listed_on, until in cur.fetchall():
            message = (
                f"warning: permit {number}: {name} is on the blacklist (失信黑名单, entry "
                f"{entry_id}, listed {listed_on}, until {until}); the permit is stored"
            )
            cur.execute(
                """INSERT INTO credit_permit_warnings (permit_no, company_id, entry_id, message,
                       source) VALUES (%s, %s, %s, %s, %s)""",
                (number, company_id, entry_id, message, source),
            )
            warnings.append(message)
    conn.commit()
    return warnings


class ListingJob:
    """The clock job: `evaluate` on its connection."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings

    def __call__(self, conn) -> Evaluation:
        return evaluate(conn, self.settings)


def listing_job(settings: Any):
    """The job `muck collect` (and `muck demo`) runs: muck/jobs.py lists it."""
    from core.scheduling import Job

    return Job(
        "credit listing",
        ListingJob(settings),
        float(settings["credit"]["listing_every_s"]),
        at_start=True,
    )
