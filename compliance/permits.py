"""Disposal permits (核准): import, storage, and the in-memory catalogue the rules query.

A permit ties a company, the trucks it covers, an origin construction site, one or more
approved disposal sites, approved routes and operating hours to a validity period. Tables are
in compliance/sql/0001_permits.sql; file formats and semantics in
docs/permits-and-black-trucks.md.

- Validity: local dates (city time zone), both inclusive (00:00 on valid_from to 24:00 on
  valid_to). Only `active` permits are valid; `suspended` and `revoked` never are.
- Operating hours: geofence windows (`geofence.timewin`), local time, an end not after the
  start crosses midnight and belongs to the day it starts on; no windows = any time.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from psycopg2.extras import Json

from compliance.permit_lookup import PermitLookup
from core.db import consistent_snapshot, transaction
from geofence.timewin import LocalClock, WindowError, normalise_windows, window_bitmap
from registry.validation import normalise_plate, plate_problem

log = logging.getLogger(__name__)

STATUSES = ("active", "suspended", "revoked")
_STATUS_ALIASES = {
    "active": "active",
    "有效": "active",
    "正常": "active",
    "suspended": "suspended",
    "暂停": "suspended",
    "中止": "suspended",
    "revoked": "revoked",
    "撤销": "revoked",
    "吊销": "revoked",
    "注销": "revoked",
}
# Column / key names accepted on import: the canonical English name first, then aliases.
FIELDS: dict[str, tuple[str, ...]] = {
    "number": ("number", "permit_number", "permit_no", "核准编号", "核准证号", "许可证号"),
    "company": ("company", "company_name", "运输企业", "运输单位", "企业名称"),
    "company_credit_code": ("company_credit_code", "credit_code", "统一社会信用代码"),
    "trucks": ("trucks", "plates", "车牌号", "核准车辆"),
    "origin_site": ("origin_site", "site", "出土工地", "工地"),
    "disposal_sites": ("disposal_sites", "disposal_site", "消纳场"),
    "routes": ("routes", "route", "核准路线", "路线"),
    "operating_hours": ("operating_hours", "hours", "作业时段", "运输时段"),
    "valid_from": ("valid_from", "有效期起", "起始日期"),
    "valid_to": ("valid_to", "有效期止", "截止日期"),
    "status": ("status", "状态"),
    "authority": ("authority", "issuing_authority", "核发机关", "发证机关"),
    "note": ("note", "备注"),
}
_ALIAS = {alias.lower(): name for name, aliases in FIELDS.items() for alias in aliases}
_LIST_SPLIT = re.compile(r"[;,，；、|\n]+")
_DATE = re.compile(r"^(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?$")
_RANGE = re.compile(r"^(\d{1,2}:\d{2})\s*(?:-|–|—|~|～|至|到)\s*(\d{1,2}:\d{2})$")
_MAX_REPORTED = 20


class PermitError(ValueError):
    """A permit operation that cannot be done; the message says why."""


class PermitImportError(PermitError):
    """A permit file that cannot be imported; `errors` lists every problem found."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        head = f"{source}: " if source else ""
        shown = errors[:_MAX_REPORTED]
        more = len(errors) - len(shown)
        text = "\n  ".join(shown) + (f"\n  ... and {more} more" if more > 0 else "")
        count = "1 problem" if len(errors) == 1 else f"{len(errors)} problems"
        super().__init__(f"{head}{count}, nothing imported:\n  {text}")


@dataclass(frozen=True)
class PermitRecord:
    """One permit as read from a file, checked for form but not yet against the database."""

    line: int  # line in the file where the record starts
    number: str
    company: str | None
    company_credit_code: str | None
    plates: tuple[str, ...]
    origin_site: str
    disposal_sites: tuple[str, ...]
    routes: tuple[str, ...]
    operating_hours: list[dict[str, Any]]
    valid_from: dt.date
    valid_to: dt.date
    status: str | None  # None: keep the stored status (new permits become active)
    authority: str | None
    note: str | None
    labels: dict[str, str] = field(default_factory=dict, compare=False)  # field -> column name

    def where(self, name: str) -> str:
        label = self.labels.get(name, name)
        return f"line {self.line}, field {label!r}"


# ---------------------------------------------------------------------------- parsing


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PermitError(f"expected text, got {value!r}")
    value = value.strip()
    return value or None


def _list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = _LIST_SPLIT.split(value)
    elif isinstance(value, list):
        items = []
        for item in value:
            if not isinstance(item, str):
                raise PermitError(f"expected a list of text, got item {item!r}")
            items.append(item)
    else:
        raise PermitError(f"expected a list or text separated by ';', got {value!r}")
    out: list[str] = []
    for item in items:
        item = item.strip()
        if item and item not in out:
            out.append(item)
    return tuple(out)


def parse_date(value: Any) -> dt.date:
    """'2026-03-01', '2026/3/1', '2026.03.01' or '2026年3月1日'."""
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    text = _text(value)
    if text is None:
        raise PermitError("a date is required (YYYY-MM-DD)")
    match = _DATE.match(text)
    if not match:
        raise PermitError(f"{text!r} is not a date (YYYY-MM-DD)")
    try:
        return dt.date(*(int(part) for part in match.groups()))
    except ValueError as exc:
        raise PermitError(f"{text!r} is not a date: {exc}") from None


def parse_operating_hours(value: Any) -> list[dict[str, Any]]:
    """Windows in canonical form; [] (any time) for an empty value.

    Accepts a list of {"start", "end", "days"} objects (`weekdays` is an alias of `days`),
    a list of "HH:MM-HH:MM" strings, or text: "21:00-04:00; 05:00-06:00" or JSON.
    """
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text[0] in "[{":
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise PermitError(f"operating hours are not valid JSON: {exc}") from None
        else:
            value = [part for part in _LIST_SPLIT.split(text) if part.strip()]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise PermitError(f"operating hours must be a list of windows, got {value!r}")
    windows: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            match = _RANGE.match(item.strip())
            if not match:
                raise PermitError(f"operating hours {item!r} are not HH:MM-HH:MM")
            item = {"start": match.group(1), "end": match.group(2)}
        elif isinstance(item, dict) and "weekdays" in item:
            item = dict(item)
            if "days" in item:
                raise PermitError("give either days or weekdays in a window, not both")
            item["days"] = item.pop("weekdays")
        windows.append(item)
    if not windows:
        return []
    try:
        return normalise_windows(windows)
    except WindowError as exc:
        raise PermitError(str(exc)) from None


def _status(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return _STATUS_ALIASES[text.lower()]
    except KeyError:
        raise PermitError(
            f"unknown status {text!r}; expected active, suspended or revoked"
        ) from None


def _record(
    line: int, raw: dict[str, Any], labels: dict[str, str]
) -> tuple[PermitRecord | None, list[str]]:
    """Validate one raw row (keys already canonical). Returns the record or the problems."""
    errors: list[str] = []
    values: dict[str, Any] = {}

    def where(name: str) -> str:
        return f"line {line}, field {labels.get(name, name)!r}"

    def take(name: str, convert, *, required: str | None = None) -> None:
        try:
            value = convert(raw.get(name))
        except PermitError as exc:
            errors.append(f"{where(name)}: {exc}")
            return
        if required and not value:
            errors.append(f"{where(name)}: {required}")
            return
        values[name] = value

    take("number", _text, required="a permit number is required")
    take("company", _text)
    take("company_credit_code", _text)
    take("trucks", _list, required="at least one truck plate is required")
    take("origin_site", _text, required="the origin construction site (zone code) is required")
    take("disposal_sites", _list, required="at least one disposal site (zone code) is required")
    take("routes", _list)
    take("operating_hours", parse_operating_hours)
    take("valid_from", parse_date)
    take("valid_to", parse_date)
    take("status", _status)
    take("authority", _text)
    take("note", _text)
    if "company" in values and "company_credit_code" in values:
        if not values["company"] and not values["company_credit_code"]:
            errors.append(f"{where('company')}: the company (name or credit code) is required")
    plates: list[str] = []
    for plate in values.get("trucks", ()):
        problem = plate_problem(plate)
        if problem:
            errors.append(f"{where('trucks')}: {problem}")
        elif normalise_plate(plate) not in plates:
            plates.append(normalise_plate(plate))
    if (
        "valid_from" in values
        and "valid_to" in values
        and values["valid_to"] < values["valid_from"]
    ):
        errors.append(
            f"{where('valid_to')}: {values['valid_to']} is before valid_from {values['valid_from']}"
        )
    if errors:
        return None, errors
    credit = values["company_credit_code"]
    record = PermitRecord(
        line=line,
        number=values["number"],
        company=values["company"],
        company_credit_code=credit.upper() if credit else None,
        plates=tuple(plates),
        origin_site=values["origin_site"],
        disposal_sites=values["disposal_sites"],
        routes=values["routes"],
        operating_hours=values["operating_hours"],
        valid_from=values["valid_from"],
        valid_to=values["valid_to"],
        status=values["status"],
        authority=values["authority"],
        note=values["note"],
        labels=labels,
    )
    return record, []


def _canonical_keys(keys: Iterable[str], where: str) -> tuple[dict[str, str], list[str]]:
    """Map the file's column names to canonical names; unknown or repeated ones are errors."""
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    errors: list[str] = []
    for key in keys:
        name = _ALIAS.get(str(key).strip().lower())
        if name is None:
            errors.append(
                f"{where}: unknown column {key!r}; expected one of "
                + ", ".join(FIELDS)
                + " (or their Chinese names, see docs/permits-and-black-trucks.md)"
            )
        elif name in seen:
            errors.append(f"{where}: columns {seen[name]!r} and {key!r} both mean {name}")
        else:
            mapping[key] = name
            seen[name] = key
    return mapping, errors


def parse_permits_csv(text: str) -> list[PermitRecord]:
    """Permits from CSV text (a header row, then one permit per row)."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise PermitImportError(["the file is empty"]) from None
    except csv.Error as exc:
        raise PermitImportError([f"line 1: {exc}"]) from None
    header = [h.strip() for h in header]
    mapping, errors = _canonical_keys([h for h in header if h], "line 1")
    if errors:
        raise PermitImportError(errors)
    records: list[PermitRecord] = []
    numbers: list[tuple[int, Any, str]] = []
    previous_end = reader.line_num
    try:
        for row in reader:
            line = previous_end + 1
            previous_end = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(header):
                extra = [cell for cell in row[len(header) :] if cell.strip()]
                if extra:
                    errors.append(f"line {line}: {len(row)} cells but {len(header)} columns")
                    continue
            raw: dict[str, Any] = {}
            labels: dict[str, str] = {}
            for key, cell in zip(header, row, strict=False):
                if key in mapping:
                    raw[mapping[key]] = cell
                    labels[mapping[key]] = key
            numbers.append((line, raw.get("number"), labels.get("number", "number")))
            record, problems = _record(line, raw, labels)
            errors += problems
            if record:
                records.append(record)
    except csv.Error as exc:
        errors.append(f"line {reader.line_num}: {exc}")
    _check_unique(numbers, errors)
    if errors:
        raise PermitImportError(errors)
    return records


def _json_items(text: str) -> list[tuple[int, Any]]:
    """The elements of a top-level JSON array, each with the line it starts on."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"\s*")

    def line_of(pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def fail(exc: json.JSONDecodeError) -> PermitImportError:
        return PermitImportError(
            [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]
        )

    pos = ws.match(text, 0).end()
    if pos >= len(text) or text[pos] != "[":
        if pos < len(text) and text[pos] == "{":
            try:
                obj, _ = decoder.raw_decode(text, pos)
            except json.JSONDecodeError as exc:
                raise fail(exc) from None
            if isinstance(obj, dict) and isinstance(obj.get("permits"), list):
                return [(line_of(pos), item) for item in obj["permits"]]
        raise PermitImportError([f"line {line_of(pos)}: expected a JSON list of permit objects"])
    items: list[tuple[int, Any]] = []
    pos = ws.match(text, pos + 1).end()
    if pos < len(text) and text[pos] == "]":
        return items
    while True:
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise fail(exc) from None
        items.append((line_of(pos), obj))
        pos = ws.match(text, end).end()
        if pos < len(text) and text[pos] == ",":
            pos = ws.match(text, pos + 1).end()
            continue
        if pos < len(text) and text[pos] == "]":
            rest = ws.match(text, pos + 1).end()
            if rest != len(text):
                raise PermitImportError([f"line {line_of(rest)}: unexpected text after the list"])
            return items
        raise PermitImportError([f"line {line_of(pos)}: expected ',' or ']' in the list"])


def parse_permits_json(text: str) -> list[PermitRecord]:
    """Permits from JSON text: a list of objects (or {"permits": [...]})."""
    records: list[PermitRecord] = []
    numbers: list[tuple[int, Any, str]] = []
    errors: list[str] = []
    for line, item in _json_items(text):
        if not isinstance(item, dict):
            errors.append(f"line {line}: expected a permit object, got {type(item).__name__}")
            continue
        mapping, problems = _canonical_keys(list(item), f"line {line}")
        errors += problems
        if problems:
            continue
        raw = {mapping[key]: value for key, value in item.items()}
        labels = {mapping[key]: key for key in item}
        numbers.append((line, raw.get("number"), labels.get("number", "number")))
        record, problems = _record(line, raw, labels)
        errors += problems
        if record:
            records.append(record)
    _check_unique(numbers, errors)
    if errors:
        raise PermitImportError(errors)
    return records


def _check_unique(seen: list[tuple[int, Any, str]], errors: list[str]) -> None:
    """Permit numbers (line, raw value, column name) must not repeat within a file."""
    first: dict[str, int] = {}
    for line, raw, label in seen:
        number = raw.strip() if isinstance(raw, str) else None
        if not number:
            continue
        if number in first:
            errors.append(
                f"line {line}, field {label!r}: permit {number!r} already given on line "
                f"{first[number]}"
            )
        else:
            first[number] = line


def read_permits_file(path: str | Path, fmt: str | None = None) -> list[PermitRecord]:
    """Read and check a CSV or JSON permit file (UTF-8, with or without BOM)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PermitImportError(
            [f"cannot read the file: {exc.strerror or exc}"], str(path)
        ) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise PermitImportError(
            [f"line {line}: not UTF-8 text (save the file as 'CSV UTF-8'; GBK is not accepted)"],
            str(path),
        ) from None
    if fmt is None:
        suffix = path.suffix.lower()
        if suffix == ".json":
            fmt = "json"
        elif suffix == ".csv":
            fmt = "csv"
        else:
            fmt = "json" if text.lstrip()[:1] in ("[", "{") else "csv"
    try:
        return parse_permits_json(text) if fmt == "json" else parse_permits_csv(text)
    except PermitImportError as exc:
        raise PermitImportError(exc.errors, str(path)) from None


# --------------------------------------------------------------------------- storage


def _resolve(cur, records: Sequence[PermitRecord]) -> tuple[dict[str, Any], list[str]]:
    """Look up companies, trucks and zones; every problem is reported."""
    errors: list[str] = []
    plates = sorted({p for r in records for p in r.plates})
    cur.execute("SELECT plate, id FROM trucks WHERE plate = ANY(%s)", (plates,))
    trucks = dict(cur.fetchall())
    codes = sorted(
        {r.origin_site for r in records} | {c for r in records for c in r.disposal_sites + r.routes}
    )
    cur.execute("SELECT code, kind FROM geofence_zones WHERE code = ANY(%s)", (codes,))
    kinds = dict(cur.fetchall())
    credit_codes = sorted({r.company_credit_code for r in records if r.company_credit_code})
    cur.execute(
        "SELECT credit_code, id FROM companies WHERE credit_code = ANY(%s)", (credit_codes,)
    )
    by_code = dict(cur.fetchall())
    names = sorted({r.company for r in records if r.company and not r.company_credit_code})
    cur.execute(
        "SELECT name, array_agg(id ORDER BY id) FROM companies WHERE name = ANY(%s) GROUP BY name",
        (names,),
    )
    by_name = dict(cur.fetchall())

    company_ids: dict[str, int] = {}
    for r in records:
        if r.company_credit_code:
            cid = by_code.get(r.company_credit_code)
            if cid is None:
                errors.append(
                    f"{r.where('company_credit_code')}: no registered company with credit code "
                    f"{r.company_credit_code!r}"
                )
            else:
                company_ids[r.number] = cid
        elif r.company:
            ids = by_name.get(r.company, [])
            if not ids:
                errors.append(f"{r.where('company')}: no registered company named {r.company!r}")
            elif len(ids) > 1:
                errors.append(
                    f"{r.where('company')}: {len(ids)} companies are named {r.company!r}; "
                    "give the credit code instead"
                )
            else:
                company_ids[r.number] = ids[0]
        missing = [p for p in r.plates if p not in trucks]
        if missing:
            errors.append(
                f"{r.where('trucks')}: not registered truck(s): {', '.join(missing)} "
                "(register them first)"
            )
        for name, wanted, codes_ in (
            ("origin_site", "site", (r.origin_site,)),
            ("disposal_sites", "disposal", r.disposal_sites),
            ("routes", "route", r.routes),
        ):
            for code in codes_:
                kind = kinds.get(code)
                if kind is None:
                    errors.append(f"{r.where(name)}: no zone with code {code!r}")
                elif kind != wanted:
                    errors.append(f"{r.where(name)}: zone {code!r} is a {kind}, not a {wanted}")
    return {"companies": company_ids, "trucks": trucks}, errors


def import_permits(conn, records: Sequence[PermitRecord], *, source: str = "") -> dict[str, int]:
    """Check every record against the database and upsert by number, in one transaction.

    Raises PermitImportError (nothing stored) listing every problem. Trucks and zones of an
    existing permit are replaced by the file's; its status is kept unless the file gives one.
    Returns {"inserted": n, "updated": m}.
    """
    counts = {"inserted": 0, "updated": 0}
    with transaction(conn) as cur:
        resolved, errors = _resolve(cur, records)
        if errors:
            raise PermitImportError(errors, source)
        for r in records:
            cur.execute(
                """INSERT INTO permits (number, company_id, origin_site, valid_from, valid_to,
                                        operating_hours, status, status_changed_at, authority,
                                        note)
                   VALUES (%(number)s, %(company)s, %(origin)s, %(vfrom)s, %(vto)s, %(hours)s,
                           coalesce(%(status)s, 'active'), now(), %(authority)s, %(note)s)
                   ON CONFLICT (number) DO UPDATE SET
                       company_id = EXCLUDED.company_id, origin_site = EXCLUDED.origin_site,
                       valid_from = EXCLUDED.valid_from, valid_to = EXCLUDED.valid_to,
                       operating_hours = EXCLUDED.operating_hours,
                       status = coalesce(%(status)s, permits.status),
                       status_changed_at = CASE
                           WHEN coalesce(%(status)s, permits.status) = permits.status
                           THEN permits.status_changed_at ELSE now() END,
                       authority = EXCLUDED.authority, note = EXCLUDED.note,
                       updated_at = now()
                   RETURNING id, (xmax = 0)""",
                {
                    "number": r.number,
                    "company": resolved["companies"][r.number],
                    "origin": r.origin_site,
                    "vfrom": r.valid_from,
                    "vto": r.valid_to,
                    "hours": Json(r.operating_hours),
                    "status": r.status,
                    "authority": r.authority,
                    "note": r.note,
                },
            )
            permit_id, inserted = cur.fetchone()
            counts["inserted" if inserted else "updated"] += 1
            cur.execute("DELETE FROM permit_trucks WHERE permit_id = %s", (permit_id,))
            cur.execute("DELETE FROM permit_zones WHERE permit_id = %s", (permit_id,))
            cur.execute(
                """INSERT INTO permit_trucks (permit_id, truck_id)
                   SELECT %s, unnest(%s::bigint[])""",
                (permit_id, [resolved["trucks"][p] for p in r.plates]),
            )
            roles = ["disposal"] * len(r.disposal_sites) + ["route"] * len(r.routes)
            codes = list(r.disposal_sites + r.routes)
            positions = list(range(len(r.disposal_sites))) + list(range(len(r.routes)))
            cur.execute(
                """INSERT INTO permit_zones (permit_id, role, zone_code, position)
                   SELECT %s, role, code, pos
                   FROM unnest(%s::text[], %s::text[], %s::smallint[]) AS t(role, code, pos)""",
                (permit_id, roles, codes, positions),
            )
    return counts


_SELECT = """
    SELECT p.id, p.number, p.company_id, c.name, c.credit_code, p.origin_site,
           p.valid_from, p.valid_to, p.operating_hours, p.status, p.status_reason,
           p.status_changed_at, p.authority, p.note, p.created_at, p.updated_at,
           coalesce((SELECT array_agg(z.zone_code ORDER BY z.position) FROM permit_zones z
                     WHERE z.permit_id = p.id AND z.role = 'disposal'), '{}'),
           coalesce((SELECT array_agg(z.zone_code ORDER BY z.position) FROM permit_zones z
                     WHERE z.permit_id = p.id AND z.role = 'route'), '{}'),
           coalesce((SELECT array_agg(t.id ORDER BY t.plate) FROM permit_trucks pt
                     JOIN trucks t ON t.id = pt.truck_id WHERE pt.permit_id = p.id), '{}'),
           coalesce((SELECT array_agg(t.plate ORDER BY t.plate) FROM permit_trucks pt
                     JOIN trucks t ON t.id = pt.truck_id WHERE pt.permit_id = p.id), '{}')
    FROM permits p JOIN companies c ON c.id = p.company_id
"""


@dataclass(frozen=True)
class PermitRow:
    """A permit as stored, for listing and display."""

    id: int
    number: str
    company_id: int
    company: str
    company_credit_code: str | None
    origin_site: str
    valid_from: dt.date
    valid_to: dt.date
    operating_hours: list[dict[str, Any]]
    status: str
    status_reason: str | None
    status_changed_at: dt.datetime | None
    authority: str | None
    note: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    disposal_sites: tuple[str, ...]
    routes: tuple[str, ...]
    truck_ids: tuple[int, ...]
    plates: tuple[str, ...]


def _row(row: tuple) -> PermitRow:
    values = list(row)
    for i in (16, 17, 18, 19):
        values[i] = tuple(values[i])
    return PermitRow(*values)


def list_permits(
    conn, *, plate: str | None = None, valid_at: dt.datetime | None = None, city_tz: str = "UTC"
) -> list[PermitRow]:
    """Permits, optionally only those covering `plate` and/or active and valid at `valid_at`."""
    where: list[str] = []
    params: list[Any] = []
    if plate:
        where.append(
            """EXISTS (SELECT 1 FROM permit_trucks pt JOIN trucks t ON t.id = pt.truck_id
                       WHERE pt.permit_id = p.id AND t.plate = %s)"""
        )
        params.append(normalise_plate(plate))
    if valid_at is not None:
        day = valid_at.astimezone(ZoneInfo(city_tz)).date()
        where.append("p.status = 'active' AND p.valid_from <= %s AND p.valid_to >= %s")
        params += [day, day]
    clause = ("WHERE " + " AND ".join(where)) if where else ""
    with conn.cursor() as cur:
        cur.execute(_SELECT + clause + " ORDER BY p.valid_from DESC, p.number", params)  # noqa: S608 (fixed fragments only)
        rows = [_row(row) for row in cur.fetchall()]
    conn.commit()
    return rows


def get_permit(conn, number: str) -> PermitRow | None:
    with conn.cursor() as cur:
        cur.execute(_SELECT + " WHERE p.number = %s", (number.strip(),))  # noqa: S608 (fixed fragments only)
        row = cur.fetchone()
    conn.commit()
    return _row(row) if row else None


def set_status(conn, number: str, status: str, reason: str | None = None) -> PermitRow:
    """Suspend, revoke or reinstate a permit; the reason and time are recorded."""
    if status not in STATUSES:
        raise PermitError(f"unknown status {status!r}; expected one of {', '.join(STATUSES)}")
    if status != "active" and not (reason and reason.strip()):
        raise PermitError(f"a reason is required to make a permit {status}")
    with transaction(conn) as cur:
        cur.execute(
            """UPDATE permits SET status = %s, status_reason = %s, status_changed_at = now(),
                      updated_at = now()
               WHERE number = %s RETURNING id""",
            (status, reason.strip() if reason else None, number.strip()),
        )
        if cur.fetchone() is None:
            raise PermitError(f"no permit numbered {number!r}")
    permit = get_permit(conn, number)
    assert permit is not None
    return permit


def revoke_permit(conn, number: str, reason: str) -> PermitRow:
    return set_status(conn, number, "revoked", reason)


def current_version(conn) -> int:
    """The permit catalogue version (changes with every change to permits)."""
    with conn.cursor() as cur:
        cur.execute("SELECT version FROM permit_version WHERE id = 1")
        row = cur.fetchone()
    return int(row[0]) if row else 0


# ------------------------------------------------------------------ in-memory catalogue


@dataclass(frozen=True, eq=False)
class Permit:
    """A permit as the rules see it (immutable; from `PermitCatalog`)."""

    id: int
    number: str
    company_id: int
    truck_ids: frozenset[int]
    origin_site: str
    disposal_sites: tuple[str, ...]
    routes: tuple[str, ...]
    operating_hours: tuple[dict[str, Any], ...]
    valid_from: dt.date
    valid_to: dt.date
    status: str
    authority: str | None
    start_s: int  # epoch seconds of 00:00 local on valid_from (inside)
    end_s: int  # epoch seconds of 00:00 local the day after valid_to (outside)
    _clock: LocalClock = field(repr=False)
    _hours: np.ndarray | None = field(repr=False)  # minute-of-week bitmap; None = any time

    def valid_at(self, epoch_s: float) -> bool:
        """Active and within its validity dates at that instant."""
        return self.status == "active" and self.start_s <= epoch_s < self.end_s

    def operating_at(self, epoch_s: float) -> bool:
        """Inside the permitted operating hours (city local time); always True without hours."""
        if self._hours is None:
            return True
        minute = self._clock.minute_of_week(np.array([int(epoch_s // 1)], dtype=np.int64))
        return bool(self._hours[minute[0]])

    def operating_mask(self, epoch_s: Any) -> np.ndarray:
        """`operating_at` for an array of epoch seconds."""
        t = np.floor(np.asarray(epoch_s, dtype=np.float64)).astype(np.int64)
        if self._hours is None:
            return np.ones(t.shape, dtype=bool)
        return self._hours[self._clock.minute_of_week(t)]

    def valid_mask(self, epoch_s: Any) -> np.ndarray:
        """`valid_at` for an array of epoch seconds."""
        t = np.asarray(epoch_s, dtype=np.float64)
        if self.status != "active":
            return np.zeros(t.shape, dtype=bool)
        return (t >= self.start_s) & (t < self.end_s)


class PermitCatalog:
    """Every permit in memory, indexed by truck; reloaded when the permit tables change.

    Same contract as `geofence.catalog.ZoneCatalog`: `permit_version` is bumped by statement
    triggers in the transaction that changes permits, so `refresh_if_changed` costs one
    primary-key read when nothing changed; the permits are read in one REPEATABLE READ
    snapshot with their version. A refresh replaces the catalogue's dictionaries; `Permit`
    objects are immutable.
    """

    def __init__(self, settings: Any = None, *, poll_interval_s: float | None = None) -> None:
        tz = settings.city["timezone"] if settings is not None else "Asia/Shanghai"
        self.clock = LocalClock(tz)
        section = settings.sections.get("compliance", {}) if settings is not None else {}
        self.poll_interval_s = (
            poll_interval_s
            if poll_interval_s is not None
            else float(section.get("permits_reload_poll_s", 2.0))
        )
        self.version: int | None = None
        self.permits: dict[int, Permit] = {}
        self.by_number: dict[str, Permit] = {}
        self.by_truck: dict[int, tuple[Permit, ...]] = {}
        self.lookup = PermitLookup([], self.clock)
        self._last_poll = float("-inf")

    def __len__(self) -> int:
        return len(self.permits)

    def _permit(self, row: PermitRow) -> Permit:
        hours = tuple(row.operating_hours or ())
        return Permit(
            id=row.id,
            number=row.number,
            company_id=row.company_id,
            truck_ids=frozenset(row.truck_ids),
            origin_site=row.origin_site,
            disposal_sites=row.disposal_sites,
            routes=row.routes,
            operating_hours=hours,
            valid_from=row.valid_from,
            valid_to=row.valid_to,
            status=row.status,
            authority=row.authority,
            start_s=self.clock.local_midnight(row.valid_from),
            end_s=self.clock.local_midnight(row.valid_to + dt.timedelta(days=1)),
            _clock=self.clock,
            _hours=window_bitmap(list(hours)) if hours else None,
        )

    def load(self, conn) -> None:
        """Load every permit now, whatever the version."""
        started = time.perf_counter()
        with consistent_snapshot(conn), conn.cursor() as cur:
            cur.execute("SELECT version FROM permit_version WHERE id = 1")
            found = cur.fetchone()
            cur.execute(_SELECT + " ORDER BY p.id")
            rows = [_row(row) for row in cur.fetchall()]
        permits = {row.id: self._permit(row) for row in rows}
        by_truck: dict[int, list[Permit]] = {}
        for permit in permits.values():
            for truck_id in permit.truck_ids:
                by_truck.setdefault(truck_id, []).append(permit)
        self.permits = permits
        self.lookup = PermitLookup(list(permits.values()), self.clock)
        self.by_number = {p.number: p for p in permits.values()}
        self.by_truck = {
            tid: tuple(sorted(ps, key=lambda p: (p.valid_from, p.id), reverse=True))
            for tid, ps in by_truck.items()
        }
        self.version = int(found[0]) if found else 0
        log.info(
            "permit catalogue version %s: %d permits loaded in %.3f s",
            self.version,
            len(permits),
            time.perf_counter() - started,
        )

    def refresh_if_changed(self, conn) -> bool:
        """Reload when the permit version differs from the loaded one; True if reloaded."""
        self._last_poll = time.monotonic()
        version = current_version(conn)
        if not conn.autocommit:
            conn.commit()
        if version == self.version:
            return False
        self.load(conn)
        return True

    def maybe_refresh(self, conn) -> bool:
        """`refresh_if_changed`, at most once per compliance.permits_reload_poll_s."""
        if time.monotonic() - self._last_poll < self.poll_interval_s:
            return False
        return self.refresh_if_changed(conn)

    def permits_for(self, truck_id: int, at_epoch_s: float) -> list[Permit]:
        """The truck's permits that are active and valid at that instant (newest first)."""
        return [p for p in self.by_truck.get(truck_id, ()) if p.valid_at(at_epoch_s)]

    def permit(self, number: str) -> Permit | None:
        return self.by_number.get(number)

    def has_permit_at(self, truck_ids: Any, epoch_s: Any) -> np.ndarray:
        """Vectorised: True where the truck has at least one valid, active permit then."""
        trucks = np.asarray(truck_ids, dtype=np.int64).reshape(-1)
        t = np.asarray(epoch_s, dtype=np.float64).reshape(-1)
        return self.lookup.valid_positions(trucks, t) >= 0
