"""Violation and black-truck queries for the pages, the API and the exports.

Filters come from the query string and are validated field by field: a page shows the
message next to its field (400), the API answers 400 with the message. Every value is a
bound parameter; the WHERE clause is fixed text and ORDER BY comes from a whitelist.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from flask_babel import LazyString, get_locale
from flask_babel import lazy_gettext as _l
from werkzeug.exceptions import BadRequest

from compliance.pipeline import PIPELINE
from compliance.violations import KINDS, STATUSES, TRANSITIONS
from registry.validation import normalise_plate
from web.params import parse_time


def _in_locale(labels: dict[str, str]) -> str:
    """A rule's label in the request's language (English outside a request)."""
    locale = get_locale()
    return labels.get(locale.language if locale is not None else "en", labels["en"])


# Each rule declares its label in both languages (compliance/rules/); like lazy_gettext, the
# language is chosen where the label is shown.
KIND_LABELS = {rule.kind: LazyString(_in_locale, rule.label) for rule in PIPELINE}
STATUS_LABELS = {
    "new": _l("new"),
    "confirmed": _l("confirmed"),
    "dismissed": _l("dismissed"),
    "case_opened": _l("case opened"),
    "closed": _l("closed case"),
    "withdrawn": _l("withdrawn"),
}
SEVERITIES = ("notice", "minor", "serious")
SEVERITY_LABELS = {"notice": _l("notice"), "minor": _l("minor"), "serious": _l("serious")}
ACTIONS = tuple(TRANSITIONS)
ACTION_LABELS = {
    "confirm": _l("Confirm"),
    "dismiss": _l("Dismiss"),
    "open_case": _l("Open a case"),
    "close": _l("Close the case"),
}
BLACK_REASON_LABELS = {
    "unregistered_plate": _l("plate not registered"),
    "no_valid_permit": _l("no valid permit"),
    "untracked": _l("no GPS track near the camera"),
    "unregistered_device": _l("telemetry from an unregistered terminal"),
}

# sort key -> ORDER BY text (never user input); every order ends on v.id for stable pages.
# The tie-breakers follow the chosen direction so that each order is one scan of an index
# (web/sql/0005_violation_list_indexes.sql) in either direction; plate and company walk the
# trucks / companies in name order.
SORTS = {
    "started_at": "v.started_at {d}, v.id {d}",
    "ended_at": "v.ended_at {d}, v.started_at {d}, v.id {d}",
    "plate": "t.plate {d}, v.started_at DESC, v.id DESC",
    "company": "c.name {d} NULLS LAST, v.started_at DESC, v.id DESC",
    "kind": "v.kind {d}, v.started_at {d}, v.id {d}",
    "severity": "v.severity {d}, v.started_at {d}, v.id {d}",
    "status": "v.status {d}, v.started_at {d}, v.id {d}",
    "points": "v.points {d}, v.started_at {d}, v.id {d}",
    "worst_value": "v.worst_value {d} NULLS LAST, v.started_at {d}, v.id {d}",
    "id": "v.id {d}",
}
FILTER_FIELDS = ("from", "to", "kind", "status", "severity", "company", "company_id", "plate")
FILTER_FIELDS += ("district", "zone", "sort", "dir")


@dataclass
class Filters:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    kind: str | None = None
    status: str | None = None
    severity: str | None = None
    company: str | None = None
    company_id: int | None = None
    plate: str | None = None
    district: str | None = None
    zone: str | None = None
    sort: str = "started_at"
    direction: str = "desc"
    raw: dict[str, str] = field(default_factory=dict)
    # the company / plate text filters as id lists (resolve_ids), so that the planner can
    # use the violations indexes on company_id / truck_id
    company_ids: list[int] | None = None
    truck_ids: list[int] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "until": self.until,
            "kind": self.kind,
            "status": self.status,
            "severity": self.severity,
            "company": _like(self.company),
            "company_code": self.company.upper() if self.company else None,
            "company_id": self.company_id,
            "plate": _like(self.plate),
            "district": self.district,
            "zone": self.zone,
            "company_ids": self.company_ids,
            "truck_ids": self.truck_ids,
        }

    def resolve_ids(self, cur) -> None:
        """Look up the companies and trucks the text filters match (small tables)."""
        if self.company and self.company_ids is None:
            cur.execute(
                "SELECT id FROM companies WHERE name ILIKE %s OR credit_code = %s",
                (_like(self.company), self.company.upper()),
            )
            self.company_ids = [r[0] for r in cur.fetchall()]
        if self.plate and self.truck_ids is None:
            cur.execute("SELECT id FROM trucks WHERE plate ILIKE %s", (_like(self.plate),))
            self.truck_ids = [r[0] for r in cur.fetchall()]

    @property
    def order_by(self) -> str:
        return SORTS[self.sort].format(d="ASC" if self.direction == "asc" else "DESC")


def _like(value: str | None) -> str | None:
    """A substring pattern with the LIKE wildcards of the input escaped."""
    if not value:
        return None
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _text(args, name: str, errors: dict, max_len: int = 100) -> str | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    if len(raw) > max_len:
        errors[name] = f"{name}: at most {max_len} characters"
        return None
    return raw


def _choice(args, name: str, choices: tuple[str, ...], errors: dict) -> str | None:
    raw = (args.get(name) or "").strip()
    if not raw:
        return None
    if raw not in choices:
        errors[name] = f"{name} must be one of {', '.join(choices)}"
        return None
    return raw


def parse_filters(args, cur=None) -> tuple[Filters, dict[str, str]]:
    """The filters of a query string, and a message per bad field (empty when all good).
    Times without an offset are city local time (datetime-local inputs). With a cursor the
    district is checked and resolved to its code (`resolve_district`)."""
    errors: dict[str, str] = {}
    f = Filters(raw={k: (args.get(k) or "") for k in FILTER_FIELDS})
    for name in ("from", "to"):
        raw = (args.get(name) or "").strip()
        if raw:
            try:
                value = parse_time(raw, name)
            except BadRequest as exc:
                errors[name] = exc.description
            else:
                if name == "from":
                    f.since = value
                else:
                    f.until = value
    if f.since and f.until and f.until <= f.since:
        errors["to"] = "to must be after from"
    f.kind = _choice(args, "kind", KINDS, errors)
    f.status = _choice(args, "status", STATUSES, errors)
    f.severity = _choice(args, "severity", SEVERITIES, errors)
    f.company = _text(args, "company", errors)
    raw_cid = (args.get("company_id") or "").strip()
    if raw_cid:
        if raw_cid.isdigit() and len(raw_cid) < 19:
            f.company_id = int(raw_cid)
        else:
            errors["company_id"] = f"company_id must be a positive integer, got {raw_cid[:40]!r}"
    plate = _text(args, "plate", errors, max_len=20)
    f.plate = normalise_plate(plate) if plate else None
    f.district = _text(args, "district", errors)
    f.zone = _text(args, "zone", errors)
    f.sort = _choice(args, "sort", tuple(SORTS), errors) or "started_at"
    f.direction = _choice(args, "dir", ("asc", "desc"), errors) or "desc"
    if cur is not None:
        resolve_district(cur, f, errors)
    return f, errors


# Every filter is a condition on violations' own columns (text filters on plates and
# companies become id lists from their small tables), so that counting needs no join and
# can be an index-only scan; `%(x)s IS NULL OR ...` folds away at plan time because psycopg2
# sends the values inline.
_WHERE = """
WHERE (%(since)s::timestamptz IS NULL OR v.started_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR v.started_at < %(until)s)
  AND (%(kind)s::text IS NULL OR v.kind = %(kind)s)
  AND (%(status)s::text IS NULL OR v.status = %(status)s)
  AND (%(severity)s::text IS NULL OR v.severity = %(severity)s)
  AND (%(company_id)s::bigint IS NULL OR v.company_id = %(company_id)s)
  AND (%(company_ids)s::bigint[] IS NULL OR v.company_id = ANY(%(company_ids)s::bigint[]))
  AND (%(truck_ids)s::bigint[] IS NULL OR v.truck_id = ANY(%(truck_ids)s::bigint[]))
  AND (%(zone)s::text IS NULL OR v.zone_code = %(zone)s)
  AND (%(district)s::text IS NULL OR v.district_code = %(district)s)
"""
_FROM = (
    """
FROM violations v
JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id"""
    + _WHERE
)

LIST_COLUMNS = (
    "id",
    "started_at",
    "ended_at",
    "plate",
    "company",
    "kind",
    "severity",
    "status",
    "zone_code",
    "district",
    "worst_value",
    "worst_unit",
    "points",
    "permit_no",
    "decision_no",
)
_SELECT = """SELECT v.id, v.started_at, v.ended_at, t.plate, c.name, v.kind, v.severity,
       v.status, v.zone_code,
       (SELECT d.name FROM geofence_districts d WHERE d.code = v.district_code),
       v.worst_value, v.worst_unit, v.points, v.permit_no, v.decision_no"""

EXPORT_COLUMNS = (
    *LIST_COLUMNS,
    "credit_code",
    "legal_basis",
    "lat",
    "lon",
    "truck_id",
    "company_id",
)
_EXPORT_SELECT = _SELECT + ", c.credit_code, v.legal_basis, v.lat, v.lon, v.truck_id, v.company_id"


_COUNT_UPTO = (
    "SELECT kind, count(*) FROM (SELECT v.kind FROM violations v"  # noqa: S608 (constant)
    + _WHERE
    + " LIMIT %(cap)s) s GROUP BY kind"
)
_COUNT_KIND_UPTO = (
    "SELECT count(*) FROM (SELECT 1 FROM violations v"  # noqa: S608 (constant)
    + _WHERE
    + " AND v.kind = %(count_kind)s LIMIT %(cap)s) s"
)
# Counting is exact up to this many matching violations (per kind). Counting every one of
# a million rows takes 400 ms even from an index; nobody needs "312,407" rather than
# "more than 10,000" to decide to narrow the filter.
COUNT_CAP = 10_000


@dataclass
class Counts:
    total: int  # exact, or a lower bound when `exact` is false
    by_kind: dict[str, int]
    capped: set[str]  # kinds with more than COUNT_CAP (their count shows COUNT_CAP)

    @property
    def exact(self) -> bool:
        return not self.capped


def count_by_kind(cur, f: Filters, *, cap: int | None = None) -> Counts:
    """Counts by kind of the matching violations, over violations alone (no join): exact
    when at most `cap` match, else per kind, each exact up to `cap`."""
    cap = COUNT_CAP if cap is None else cap
    f.resolve_ids(cur)
    params = f.params()
    cur.execute(_COUNT_UPTO, {**params, "cap": cap + 1})  # one pass when at most `cap`
    by_kind = dict(cur.fetchall())
    if sum(by_kind.values()) <= cap:
        return Counts(sum(by_kind.values()), by_kind, set())
    by_kind, capped = {}, set()
    for kind in (f.kind,) if f.kind else KINDS:
        cur.execute(_COUNT_KIND_UPTO, {**params, "cap": cap + 1, "count_kind": kind})
        n = cur.fetchone()[0]
        if n > cap:
            n = cap
            capped.add(kind)
        if n:
            by_kind[kind] = n
    return Counts(sum(by_kind.values()), by_kind, capped)


def count_violations(cur, f: Filters) -> int:
    return count_by_kind(cur, f).total


def counts_by_kind(cur, f: Filters) -> dict[str, int]:
    return count_by_kind(cur, f).by_kind


# Pages deeper than this are refused: OFFSET reads and drops every row before the page, so
# page 20,000 of an unfiltered list would scan a million rows. Past it, narrow the filter
# (a time range) or, for the API, walk by time windows (`from`/`to`).
MAX_OFFSET = 10_000


def check_offset(offset: int, errors: dict[str, str]) -> None:
    if offset >= MAX_OFFSET:
        errors["page"] = (
            f"page: at most the first {MAX_OFFSET:,} rows can be paged through; "
            "narrow the filter (e.g. a shorter time range)"
        )


# The page's ids are found first over the narrow columns (index-only where an index covers
# the filter and the order), and only those rows are read whole: a violation row is wide
# (rule parameters, legal basis), so sorting or skipping thousands of whole rows reads
# thousands of heap pages.
_PAGE_IDS = (
    """SELECT v.id FROM violations v
JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id"""  # noqa: S608 (constant)
    + _WHERE
)
_PAGE = (
    _SELECT  # noqa: S608 (constant fragments and whitelisted ORDER BY)
    + """
FROM violations v
JOIN trucks t ON t.id = v.truck_id
LEFT JOIN companies c ON c.id = v.company_id
WHERE v.id IN ("""
    + _PAGE_IDS
    + " ORDER BY {order} LIMIT %(limit)s OFFSET %(offset)s) ORDER BY {order}"
)


def list_page(cur, f: Filters, *, limit: int, offset: int) -> list[dict[str, Any]]:
    f.resolve_ids(cur)
    cur.execute(
        _PAGE.format(order=f.order_by),
        {**f.params(), "limit": limit, "offset": offset},
    )
    return [dict(zip(LIST_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def export_rows(cur, f: Filters, *, limit: int) -> list[dict[str, Any]]:
    """At most `limit` + 1 rows (the caller refuses the export when there are more)."""
    f.resolve_ids(cur)
    cur.execute(
        _EXPORT_SELECT + _FROM + f" ORDER BY {f.order_by} LIMIT %(limit)s",  # noqa: S608 (whitelisted)
        {**f.params(), "limit": limit + 1},
    )
    return [dict(zip(EXPORT_COLUMNS, row, strict=True)) for row in cur.fetchall()]


def violation_status(cur, violation_id: int, *, lock: bool = False) -> dict | None:
    cur.execute(
        "SELECT status, decision_no FROM violations WHERE id = %s"  # noqa: S608 (fixed text)
        + (" FOR UPDATE" if lock else ""),
        (violation_id,),
    )
    row = cur.fetchone()
    return {"status": row[0], "decision_no": row[1]} if row else None


def resolve_district(cur, f: Filters, errors: dict[str, str]) -> None:
    """Turn the district filter (a 6-digit 行政区划代码 or a district name) into the code the
    violations carry; an unknown district is a message next to the field."""
    if not f.district or "district" in errors:
        return
    cur.execute(
        "SELECT code FROM geofence_districts WHERE code = %s OR name = %s ORDER BY code LIMIT 1",
        (f.district, f.district),
    )
    row = cur.fetchone()
    if row is None:
        errors["district"] = f"unknown district {f.district[:40]!r} (a district code or name)"
        f.district = None
    else:
        f.district = row[0]


def districts(cur) -> list[tuple[str, str]]:
    """(code, name) of the active districts, for the filters."""
    cur.execute("SELECT code, name FROM geofence_districts WHERE active ORDER BY code")
    return cur.fetchall()


def district_name(cur, code: str | None) -> str | None:
    if not code:
        return None
    cur.execute("SELECT name FROM geofence_districts WHERE code = %s", (code,))
    row = cur.fetchone()
    return row[0] if row else None


def zone_district(cur, code: str | None) -> str | None:
    if not code:
        return None
    cur.execute("SELECT district FROM geofence_zones WHERE code = %s", (code,))
    row = cur.fetchone()
    return row[0] if row else None


def iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def json_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) for k, v in row.items()}


# ---- overview -------------------------------------------------------------------------


def violation_overview(cur, *, days: int = 30, top: int = 10) -> dict[str, Any]:
    """Violations per kind over the last `days` days (withdrawn ones left out), and the
    companies with the most."""
    cur.execute(
        """SELECT kind, count(*) FROM violations
           WHERE started_at >= now() - make_interval(days => %s) AND status <> 'withdrawn'
           GROUP BY kind""",
        (days,),
    )
    per_kind = dict(cur.fetchall())
    cur.execute(
        """SELECT c.id, c.name, count(*) AS n,
                  count(*) FILTER (WHERE v.status IN ('confirmed', 'case_opened', 'closed'))
           FROM violations v JOIN companies c ON c.id = v.company_id
           WHERE v.started_at >= now() - make_interval(days => %s) AND v.status <> 'withdrawn'
           GROUP BY c.id, c.name ORDER BY n DESC, c.name LIMIT %s""",
        (days, top),
    )
    companies = [
        {"id": cid, "name": name, "count": n, "confirmed": conf}
        for cid, name, n, conf in cur.fetchall()
    ]
    return {
        "days": days,
        "per_kind": [{"kind": k, "count": per_kind.get(k, 0)} for k in KINDS],
        "top_companies": companies,
    }


# ---- black trucks -----------------------------------------------------------------------

BLACK_COLUMNS = (
    "id",
    "kind",
    "key",
    "truck_id",
    "first_seen",
    "last_seen",
    "sightings",
    "confident_sightings",
    "sites",
    "reasons",
    "status",
    "handled_by",
    "handled_at",
    "handled_note",
)
_BLACK_SELECT = "SELECT " + ", ".join(BLACK_COLUMNS) + " FROM black_trucks"  # noqa: S608 (fixed)
_BLACK_WHERE = """ WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s)
  AND (%(q)s::text IS NULL OR key ILIKE %(q)s)"""


def black_truck_params(args) -> tuple[dict[str, Any], dict[str, str]]:
    errors: dict[str, str] = {}
    q = _text(args, "q", errors, max_len=64)
    return {
        "status": _choice(args, "status", ("new", "handled"), errors),
        "kind": _choice(args, "kind", ("plate", "device"), errors),
        "q": _like(q.replace(" ", "") if q else None),
    }, errors


def list_black_page(cur, params: dict, *, limit: int, offset: int) -> tuple[list[dict], int]:
    cur.execute("SELECT count(*) FROM black_trucks" + _BLACK_WHERE, params)  # noqa: S608 (fixed)
    total = cur.fetchone()[0]
    cur.execute(
        _BLACK_SELECT
        + _BLACK_WHERE
        + " ORDER BY (status = 'new') DESC, last_seen DESC, id LIMIT %(limit)s OFFSET %(offset)s",
        {**params, "limit": limit, "offset": offset},
    )
    rows = [dict(zip(BLACK_COLUMNS, r, strict=True)) for r in cur.fetchall()]
    return rows, total


def get_black_row(cur, black_id: int) -> dict | None:
    cur.execute(_BLACK_SELECT + " WHERE id = %s", (black_id,))
    row = cur.fetchone()
    return dict(zip(BLACK_COLUMNS, row, strict=True)) if row else None


def black_actions(cur, black_id: int) -> list[tuple]:
    cur.execute(
        """SELECT at, actor, action, note FROM black_truck_actions
           WHERE black_truck_id = %s ORDER BY at, id""",
        (black_id,),
    )
    return cur.fetchall()


def device_days(cur, device_id: str) -> list[tuple]:
    cur.execute(
        """SELECT day, first_fix, last_fix, fixes, last_lat, last_lon, sites
           FROM unregistered_device_days WHERE device_id = %s ORDER BY day""",
        (device_id,),
    )
    return cur.fetchall()
