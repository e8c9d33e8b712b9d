"""Credit scores, recomputed from the case history (no stored score to drift from it).

A subject (a company; a truck or a driver when the city's scheme says so) starts each cycle
with `credit.base_points`. A case deducts its points from the moment it was decided
(`decided_at`) until it is withdrawn (`withdrawn_at`), in the cycle that holds its decision
date. So the score at any past moment is the same computation with that moment as `as_of`:
an auditor asking "why was this company on the blacklist on 3 May" gets the lines that made
the score then, including the cases decided later or withdrawn since, marked as such.

Deductions (a violation absorbed by a heavier one of the same conduct in the same case —
一事不二罚, docs/compliance.md — deducts nothing of its own):
  * a company or a driver: per violation of the case, `credit.kind_points[kind]`, plus once
    per case `credit.penalty_points[penalty_category]`;
  * a truck: per violation of that truck in the case, `credit.kind_points[kind]` (the
    penalty falls on the party, not on the vehicle).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

COUNTING = ("decided", "published", "closed")
SUBJECTS = ("company", "truck", "driver")


class SchemeError(ValueError):
    """A credit scheme in the configuration that cannot be used; names the key."""


@dataclass(frozen=True)
class CaseViolation:
    id: int
    kind: str
    truck_id: int
    flags: frozenset[str]


@dataclass(frozen=True)
class CaseRecord:
    """What scoring needs of a case (credit_cases with its violations)."""

    id: int
    case_no: str
    decision_no: str | None
    decision_date: dt.date | None
    decided_at: dt.datetime | None
    withdrawn_at: dt.datetime | None
    withdrawn_reason: str | None
    status: str
    penalty_category: str | None
    company_id: int | None
    driver_licence: str | None
    driver_name: str | None
    demo: bool
    violations: tuple[CaseViolation, ...]

    def in_force(self, as_of: dt.datetime) -> bool:
        """Decided by `as_of` and not withdrawn by then."""
        if self.decided_at is None or self.decided_at > as_of:
            return False
        return self.withdrawn_at is None or self.withdrawn_at > as_of


@dataclass(frozen=True)
class Line:
    """One line of an explanation. `points` is what it deducts now (0 for a line that only
    explains why a case does not count)."""

    case_id: int
    case_no: str
    decision_no: str | None
    decision_date: dt.date | None
    what: str  # "violation", "penalty", "withdrawn", "not_yet_decided", "floor"
    points: int
    violation_id: int | None = None
    kind: str | None = None
    penalty_category: str | None = None
    at: dt.datetime | None = None  # withdrawn_at / decided_at for the explanatory lines
    note: str | None = None
    restored: int = 0  # a withdrawn case: the points it no longer deducts


@dataclass
class Score:
    subject: str
    subject_id: str
    as_of: dt.datetime
    cycle_start: dt.date
    cycle_end: dt.date  # exclusive
    base: int
    score: int
    lines: list[Line] = field(default_factory=list)
    cases: int = 0  # decided cases in force in the cycle

    @property
    def deducted(self) -> int:
        return self.base - self.score


@dataclass(frozen=True)
class Scheme:
    base_points: int
    cycle_month: int
    cycle_day: int
    kind_points: dict[str, int]
    penalty_points: dict[str, int]
    score_trucks: bool
    score_drivers: bool
    timezone: str

    @classmethod
    def from_settings(cls, settings: Any) -> Scheme:
        credit = settings["credit"]
        start = str(credit["cycle_start"])
        try:
            month, day = (int(part) for part in start.split("-"))
            dt.date(2024, month, day)  # a leap year accepts 02-29; refused below
        except ValueError:
            raise SchemeError(f"credit.cycle_start must be MM-DD, got {start!r}") from None
        if (month, day) == (2, 29):
            raise SchemeError("credit.cycle_start cannot be 02-29 (not every year has it)")
        if credit["base_points"] <= 0:
            raise SchemeError("credit.base_points must be positive")
        return cls(
            base_points=int(credit["base_points"]),
            cycle_month=month,
            cycle_day=day,
            kind_points={k: int(v) for k, v in credit["kind_points"].items()},
            penalty_points={k: int(v) for k, v in credit["penalty_points"].items()},
            score_trucks=bool(credit["score_trucks"]),
            score_drivers=bool(credit["score_drivers"]),
            timezone=settings.city["timezone"],
        )

    def scores(self, subject: str) -> bool:
        return subject == "company" or (
            self.score_trucks if subject == "truck" else self.score_drivers
        )

    def cycle_of(self, day: dt.date) -> tuple[dt.date, dt.date]:
        """[start, end) of the cycle holding `day`."""
        start = dt.date(day.year, self.cycle_month, self.cycle_day)
        if day < start:
            start = dt.date(day.year - 1, self.cycle_month, self.cycle_day)
        return start, dt.date(start.year + 1, self.cycle_month, self.cycle_day)

    def local_day(self, when: dt.datetime) -> dt.date:
        return when.astimezone(ZoneInfo(self.timezone)).date()

    def end_of_day(self, day: dt.date) -> dt.datetime:
        """The last moment of `day` in city time: "the score on 3 May" is the score then."""
        local = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), ZoneInfo(self.timezone))
        return local - dt.timedelta(microseconds=1)


def _case_lines(scheme: Scheme, case: CaseRecord, subject: str, subject_id: str) -> list[Line]:
    """The deductions a case makes for one subject, if it counts."""
    common = dict(
        case_id=case.id,
        case_no=case.case_no,
        decision_no=case.decision_no,
        decision_date=case.decision_date,
    )
    lines = []
    for v in case.violations:
        if subject == "truck" and str(v.truck_id) != subject_id:
            continue
        lines.append(
            Line(
                **common,
                what="violation",
                points=scheme.kind_points.get(v.kind, 0),
                violation_id=v.id,
                kind=v.kind,
            )
        )
    if subject != "truck" and case.penalty_category:
        lines.append(
            Line(
                **common,
                what="penalty",
                points=scheme.penalty_points.get(case.penalty_category, 0),
                penalty_category=case.penalty_category,
            )
        )
    return lines


def score_subject(
    scheme: Scheme,
    cases: Iterable[CaseRecord],
    subject: str,
    subject_id: str | int,
    as_of: dt.datetime,
) -> Score:
    """The subject's score at `as_of`, with every line behind it. `cases` are the subject's
    cases (any cycle, any status): the ones outside `as_of`'s cycle are ignored, the ones of
    the cycle that do not count (yet, or any more) explain themselves."""
    subject_id = str(subject_id)
    start, end = scheme.cycle_of(scheme.local_day(as_of))
    score = Score(subject, subject_id, as_of, start, end, scheme.base_points, scheme.base_points)
    total = 0
    for case in sorted(cases, key=lambda c: (c.decision_date or dt.date.min, c.id)):
        if case.decision_date is None or not start <= case.decision_date < end:
            continue
        if case.decided_at is None:
            continue
        common = dict(
            case_id=case.id,
            case_no=case.case_no,
            decision_no=case.decision_no,
            decision_date=case.decision_date,
        )
        if case.decided_at > as_of:
            score.lines.append(Line(**common, what="not_yet_decided", points=0, at=case.decided_at))
            continue
        lines = _case_lines(scheme, case, subject, subject_id)
        if case.withdrawn_at is not None and case.withdrawn_at <= as_of:
            restored = sum(line.points for line in lines)
            score.lines.append(
                Line(
                    **common,
                    what="withdrawn",
                    points=0,
                    at=case.withdrawn_at,
                    note=case.withdrawn_reason,
                    restored=restored,
                )
            )
            continue
        score.cases += 1
        score.lines.extend(lines)
        total += sum(line.points for line in lines)
    raw = scheme.base_points - total
    if raw < 0:
        score.lines.append(Line(0, "", None, None, what="floor", points=raw, note=f"{raw} → 0"))
        raw = 0
    score.score = raw
    return score


# Every case that was ever decided, with its violations (those of a withdrawn case too: its
# history explains the points it gave back). Bound parameters only.
_CASES = """
SELECT c.id, c.case_no, c.decision_no, c.decision_date, c.decided_at, c.withdrawn_at,
       c.withdrawn_reason, c.status, c.penalty_category, c.company_id, c.driver_licence,
       c.driver_name, c.demo,
       coalesce(json_agg(json_build_object(
           'id', v.id, 'kind', v.kind, 'truck_id', v.truck_id,
           'flags', (SELECT coalesce(json_agg(key), '[]') FROM jsonb_each(v.rule_params)
                     WHERE value = 'true'::jsonb)) ORDER BY v.id)
           FILTER (WHERE v.id IS NOT NULL), '[]')
FROM credit_cases c
LEFT JOIN credit_case_violations cv
       ON cv.case_id = c.id AND (cv.active OR c.withdrawn_at IS NOT NULL)
-- One act, one charge (compliance/concurrence.py): a violation linked to a heavier one of the
-- same conduct (absorbed_by) deducts nothing when the heavier one is in the same case.
LEFT JOIN violations v ON v.id = cv.violation_id
      AND NOT EXISTS (SELECT 1 FROM credit_case_violations h
                      WHERE h.case_id = c.id AND h.violation_id = v.absorbed_by)
WHERE c.decided_at IS NOT NULL
  AND (%(company)s::bigint IS NULL OR c.company_id = %(company)s)
  AND (%(truck)s::bigint IS NULL OR EXISTS (
        SELECT 1 FROM credit_case_violations x JOIN violations y ON y.id = x.violation_id
        WHERE x.case_id = c.id AND y.truck_id = %(truck)s))
  AND (%(driver)s::text IS NULL OR c.driver_licence = %(driver)s)
GROUP BY c.id
ORDER BY c.decision_date, c.id
"""


def load_cases(
    cur, *, company_id: int | None = None, truck_id: int | None = None, driver: str | None = None
) -> list[CaseRecord]:
    """Decided cases (in force or withdrawn since), optionally of one subject."""
    cur.execute(_CASES, {"company": company_id, "truck": truck_id, "driver": driver})
    out = []
    for row in cur.fetchall():
        *head, violations = row
        out.append(
            CaseRecord(
                *head,
                violations=tuple(
                    CaseViolation(v["id"], v["kind"], v["truck_id"], frozenset(v["flags"]))
                    for v in violations
                ),
            )
        )
    return out


def cases_by_subject(scheme: Scheme, cases: Sequence[CaseRecord]) -> dict[tuple[str, str], list]:
    """(subject, id) → the cases that concern it, for every subject the scheme scores."""
    out: dict[tuple[str, str], list[CaseRecord]] = defaultdict(list)
    for case in cases:
        if case.company_id is not None:
            out[("company", str(case.company_id))].append(case)
        if scheme.score_trucks:
            for truck in {v.truck_id for v in case.violations}:
                out[("truck", str(truck))].append(case)
        if scheme.score_drivers and case.driver_licence:
            out[("driver", case.driver_licence)].append(case)
    return out


def company_score(conn, settings: Any, company_id: int, as_of: dt.datetime | None = None) -> Score:
    """One company's score at `as_of` (now by default), explained."""
    scheme = Scheme.from_settings(settings)
    with conn.cursor() as cur:
        cases = load_cases(cur, company_id=company_id)
    conn.rollback()
    return score_subject(scheme, cases, "company", company_id, as_of or _now())


def subject_score(
    conn, settings: Any, subject: str, subject_id: str | int, as_of: dt.datetime | None = None
) -> Score:
    """A company's, truck's or driver's score at `as_of`; SchemeError if the scheme does not
    score that kind of subject."""
    if subject not in SUBJECTS:
        raise SchemeError(f"unknown subject {subject!r}: one of {', '.join(SUBJECTS)}")
    scheme = Scheme.from_settings(settings)
    if not scheme.scores(subject):
        raise SchemeError(f"this city's scheme does not score {subject}s (credit.score_{subject}s)")
    with conn.cursor() as cur:
        if subject == "company":
            cases = load_cases(cur, company_id=int(subject_id))
        elif subject == "truck":
            cases = load_cases(cur, truck_id=int(subject_id))
        else:
            cases = load_cases(cur, driver=str(subject_id))
    conn.rollback()
    return score_subject(scheme, cases, subject, subject_id, as_of or _now())


def score_history(
    scheme: Scheme,
    cases: Sequence[CaseRecord],
    subject: str,
    subject_id: str,
    days: Sequence[dt.date],
) -> list[tuple[dt.date, int]]:
    """The score at the end of each day (for the charts and sparklines)."""
    return [
        (day, score_subject(scheme, cases, subject, subject_id, scheme.end_of_day(day)).score)
        for day in days
    ]


@dataclass
class CompanyStanding:
    company_id: int
    name: str
    credit_code: str | None
    score: Score
    history: list[tuple[dt.date, int]]
    demo: bool


def company_standings(
    conn, settings: Any, *, as_of: dt.datetime | None = None, history_days: int = 30
) -> list[CompanyStanding]:
    """Every active company with its score now and its daily score over `history_days`,
    lowest score first (the overview's ranking). One query for all cases."""
    scheme = Scheme.from_settings(settings)
    as_of = as_of or _now()
    today = scheme.local_day(as_of)
    days = [today - dt.timedelta(days=n) for n in range(history_days - 1, -1, -1)]
    with conn.cursor() as cur:
        cases = load_cases(cur)
        cur.execute("SELECT id, name, credit_code FROM companies WHERE active ORDER BY name")
        companies = cur.fetchall()
    conn.rollback()
    by_company: dict[int, list[CaseRecord]] = defaultdict(list)
    for case in cases:
        if case.company_id is not None:
            by_company[case.company_id].append(case)
    out = []
    for cid, name, code in companies:
        own = by_company.get(cid, [])
        score = score_subject(scheme, own, "company", cid, as_of)
        history = score_history(scheme, own, "company", str(cid), days[:-1]) + [
            (today, score.score)
        ]
        out.append(CompanyStanding(cid, name, code, score, history, demo=any(c.demo for c in own)))
    out.sort(key=lambda s: (s.score.score, s.name))
    return out


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
