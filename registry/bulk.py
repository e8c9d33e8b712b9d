"""Bulk import and export of companies, trucks and terminal bindings (`muck registry import`,
the dashboard's registry upload).

A file is checked whole — every field, repeated keys within the file, then the companies,
plates and bindings it refers to in the registry — before anything is written, and every
problem is reported with its line and column. Nothing is stored if any row is bad, unless the
caller asks to skip bad rows; then the good rows are stored and the bad ones reported.

Re-importing is idempotent: a company is found by its credit code (one without a code by its
name among those without a code), a truck by its plate, a binding by device id and start;
each row is reported as created, updated or unchanged, and an unchanged row is not written
(its `updated_at` stays, so the live map does not resend it).

A column missing from the file leaves that field of existing records as stored; a column
that is present but empty clears it (for `active` and `plate_color`, which cannot be empty,
an empty cell keeps what is stored and a new record gets the default).

Every function works in the caller's transaction and never commits.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from registry.tables import RegistryFileError, Row, parse_time_text
from registry.validation import (
    DEVICE_ID,
    credit_code_problem,
    credit_code_valid,
    normalise_plate,
    plate_problem,
)

PLATE_COLOR_NAMES = {
    "yellow": "黄色",
    "blue": "蓝色",
    "green": "绿色",
    "yellow_green": "黄绿色",
    "white": "白色",
    "black": "黑色",
}
_PLATE_COLORS = {
    **{k: k for k in PLATE_COLOR_NAMES},
    **{v: k for k, v in PLATE_COLOR_NAMES.items()},
    **{v[:-1]: k for k, v in PLATE_COLOR_NAMES.items()},  # 黄, 蓝, …
    "黄绿双拼": "yellow_green",
    "渐变绿": "green",
}
_TRUE = {"是", "有效", "启用", "正常", "true", "yes", "y", "1", "active"}
_FALSE = {"否", "无效", "停用", "注销", "false", "no", "n", "0", "inactive"}


class CellError(ValueError):
    """A cell that cannot be used; the message says why (the caller adds where)."""


@dataclass
class ImportReport:
    kind: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: list[str] = field(default_factory=list)  # problems of the rows left out
    flagged: list[str] = field(default_factory=list)  # stored, with a warning
    stored: bool = False

    def summary(self) -> str:
        text = f"{self.kind}: {self.created} created, {self.updated} updated, {self.unchanged} unchanged"
        if self.skipped:
            lines = len({p.split(",")[0] for p in self.skipped})
            text += f", {lines} bad row(s) skipped"
        if self.flagged:
            text += f", {len(self.flagged)} flagged"
        if not self.stored:
            text += " (nothing stored: check only)"
        return text


@dataclass
class _Plan:
    """What one good row does: insert (`row_id` None) or update `row_id` to `values`."""

    row: Row
    row_id: int | None
    values: dict[str, Any]
    changed: bool


class _Problems:
    def __init__(self) -> None:
        self.by_line: dict[int, list[str]] = defaultdict(list)

    def add(self, row: Row, name: str | None, message: str) -> None:
        where = row.where(name) if name else f"line {row.line}"
        self.by_line[row.line].append(f"{where}: {message}")

    def bad(self, row: Row) -> bool:
        return row.line in self.by_line

    def all(self) -> list[str]:
        return [p for line in sorted(self.by_line) for p in self.by_line[line]]


# --------------------------------------------------------------------------------- cells


def _text(value: Any) -> str | None:
    """A cell as stripped text, None when empty. Spreadsheet numbers become their digits;
    a number too long for a float (an 18-digit code typed into a number cell) has lost its
    last digits and is refused."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise CellError(f"expected text, got {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        raise CellError(
            f"the spreadsheet stored {value!r} as a number and may have lost digits: format "
            "the column as text"
        )
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise CellError(f"expected text, got {value!r}")
    return value.strip() or None


def _flag(value: Any) -> bool | None:
    text = _text(value)
    if text is None:
        return None
    if isinstance(value, bool):
        return value
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise CellError(f"{text!r} is not yes or no: expected 是 or 否")


def _plate_color(value: Any) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        return _PLATE_COLORS[text.lower()]
    except KeyError:
        raise CellError(
            f"unknown plate colour {text!r}: expected one of "
            + ", ".join(PLATE_COLOR_NAMES.values())
        ) from None


def _take(problems: _Problems, row: Row, name: str, convert, required: str | None = None):
    """(present, value): whether the file has the field, and its converted value."""
    if name not in row.values:
        if required:
            problems.add(row, name, required)
        return False, None
    try:
        value = convert(row.values[name])
    except (CellError, ValueError) as exc:
        problems.add(row, name, str(exc))
        return True, None
    if required and value is None:
        problems.add(row, name, required)
    return True, value


def _first_seen(problems: _Problems, seen: dict, key, row: Row, name: str, what: str) -> None:
    if key in seen:
        problems.add(row, name, f"{what} already given on line {seen[key]}")
    else:
        seen[key] = row.line


# ----------------------------------------------------------------------------- companies


_COMPANY_FIELDS = (
    "name",
    "credit_code",
    "credit_code_valid",
    "legal_representative",
    "phone",
    "active",
)


def _plan_companies(cur, rows: list[Row], problems: _Problems, flagged: list[str]) -> list[_Plan]:
    parsed: list[tuple[Row, dict[str, Any], set[str]]] = []
    seen: dict = {}
    for row in rows:
        values: dict[str, Any] = {}
        present: set[str] = set()
        for name, convert, required in (
            ("name", _text, "the company name is required"),
            ("credit_code", _text, None),
            ("legal_representative", _text, None),
            ("phone", _text, None),
            ("active", _flag, None),
        ):
            has, value = _take(problems, row, name, convert, required)
            if has:
                present.add(name)
                values[name] = value
        code = values.get("credit_code")
        if code:
            code = code.upper().replace(" ", "")
            values["credit_code"] = code
            problem = credit_code_problem(code)
            if problem:
                problems.add(row, "credit_code", problem)
            else:
                _first_seen(
                    problems, seen, ("code", code), row, "credit_code", f"credit code {code}"
                )
        elif values.get("name"):
            _first_seen(
                problems,
                seen,
                ("name", values["name"]),
                row,
                "name",
                f"company {values['name']!r} without a credit code",
            )
        parsed.append((row, values, present))

    codes = [v["credit_code"] for _, v, _ in parsed if v.get("credit_code")]
    names = [v["name"] for _, v, _ in parsed if not v.get("credit_code") and v.get("name")]
    cols = ("id",) + _COMPANY_FIELDS
    cur.execute(_select("companies", cols, "credit_code = ANY(%s)"), (codes,))
    by_code = {r[2]: _as_dict(("id",) + _COMPANY_FIELDS, r) for r in cur.fetchall()}
    cur.execute(_select("companies", cols, "credit_code IS NULL AND name = ANY(%s)"), (names,))
    by_name: dict[str, list[dict]] = defaultdict(list)
    for r in cur.fetchall():
        by_name[r[1]].append(_as_dict(("id",) + _COMPANY_FIELDS, r))

    plans: list[_Plan] = []
    for row, values, present in parsed:
        if problems.bad(row):
            continue
        code = values.get("credit_code")
        if code:
            existing = by_code.get(code)
        else:
            matches = by_name.get(values["name"], [])
            if len(matches) > 1:
                problems.add(
                    row,
                    "name",
                    f"{len(matches)} registered companies are named {values['name']!r} and have no "
                    "credit code: give the credit code",
                )
                continue
            existing = matches[0] if matches else None
        after = _merged(existing, values, present, defaults={"active": True})
        after["credit_code_valid"] = bool(code) and credit_code_valid(code)
        if code and not after["credit_code_valid"]:
            flagged.append(
                f"{row.where('credit_code')}: {code} fails the GB 32100 check character: "
                "stored and flagged, please verify it"
            )
        plans.append(_plan(row, existing, after, _COMPANY_FIELDS))
    return plans


def _select(table: str, cols: tuple[str, ...], where: str):
    """SELECT cols FROM table WHERE <where> (a fixed condition with its placeholders)."""
    from psycopg2 import sql

    return sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(table), sql.SQL(where)
    )


def _as_dict(cols: tuple[str, ...], values) -> dict[str, Any]:
    return dict(zip(cols, values, strict=True))


def _merged(existing: dict | None, values: dict, present: set[str], defaults: dict) -> dict:
    """The record after the row: the file's fields, the stored ones for fields the file does
    not have, defaults for a new record; a None in a non-nullable field keeps what is stored."""
    after = dict(existing or {})
    after.pop("id", None)
    for name, value in values.items():
        if name in present:
            if value is None and name in defaults:
                value = after.get(name, defaults[name])
            after[name] = value
    for name, default in defaults.items():
        after.setdefault(name, default)
    return after


def _plan(row: Row, existing: dict | None, after: dict, fields: tuple[str, ...]) -> _Plan:
    for name in fields:
        after.setdefault(name, None)
    if existing is None:
        return _Plan(row, None, after, True)
    changed = any(existing.get(name) != after.get(name) for name in fields)
    return _Plan(row, existing["id"], after, changed)


# -------------------------------------------------------------------------------- trucks


_TRUCK_FIELDS = ("plate", "plate_color", "trailer_plate", "company_id", "active")
_COMPANY_REFS = ("company_credit_code", "company_id", "company")


def _company_id_cell(value: Any) -> int | None:
    text = _text(value)
    if text is None:
        return None
    if not text.isdigit():
        raise CellError(f"{text!r} is not a company number")
    return int(text)


def _plan_trucks(cur, rows: list[Row], problems: _Problems, flagged: list[str]) -> list[_Plan]:
    parsed = []
    seen: dict = {}
    for row in rows:
        values: dict[str, Any] = {}
        present: set[str] = set()
        has, plate = _take(problems, row, "plate", _text, "the plate is required")
        if plate:
            problem = plate_problem(plate)
            if problem:
                problems.add(row, "plate", problem)
            else:
                values["plate"] = normalise_plate(plate)
                present.add("plate")
                _first_seen(
                    problems, seen, values["plate"], row, "plate", f"plate {values['plate']}"
                )
        has, trailer = _take(problems, row, "trailer_plate", _text)
        if has:
            present.add("trailer_plate")
            if trailer and plate_problem(trailer):
                problems.add(row, "trailer_plate", plate_problem(trailer))
            values["trailer_plate"] = normalise_plate(trailer) if trailer else None
        has, color = _take(problems, row, "plate_color", _plate_color)
        if has:
            present.add("plate_color")
            values["plate_color"] = color
        has, active = _take(problems, row, "active", _flag)
        if has:
            present.add("active")
            values["active"] = active
        refs = {}
        for name, convert in (
            ("company_credit_code", _text),
            ("company_id", _company_id_cell),
            ("company", _text),
        ):
            has, value = _take(problems, row, name, convert)
            if has:
                refs[name] = value
        parsed.append((row, values, present, refs))

    def rows_where(query, keys: list) -> list[tuple]:
        cur.execute(query, (keys,))
        return cur.fetchall()

    codes = [r["company_credit_code"].upper() for *_, r in parsed if r.get("company_credit_code")]
    ids = [r["company_id"] for *_, r in parsed if r.get("company_id")]
    names = [r["company"] for *_, r in parsed if r.get("company")]
    company_by_code = dict(
        rows_where("SELECT credit_code, id FROM companies WHERE credit_code = ANY(%s)", codes)
    )
    company_ids = {r[0] for r in rows_where("SELECT id FROM companies WHERE id = ANY(%s)", ids)}
    company_by_name: dict[str, list[int]] = defaultdict(list)
    for name, cid in rows_where("SELECT name, id FROM companies WHERE name = ANY(%s)", names):
        company_by_name[name].append(cid)
    plates = [v["plate"] for _, v, _, _ in parsed if v.get("plate")]
    cols = ("id",) + _TRUCK_FIELDS
    existing_by_plate = {
        r[1]: _as_dict(("id",) + _TRUCK_FIELDS, r)
        for r in rows_where(_select("trucks", cols, "plate = ANY(%s)"), plates)
    }

    plans: list[_Plan] = []
    for row, values, present, refs in parsed:
        if refs:  # the file names companies: resolve the first reference given
            present.add("company_id")
            values["company_id"] = None
            if refs.get("company_credit_code"):
                code = refs["company_credit_code"].upper()
                values["company_id"] = company_by_code.get(code)
                if values["company_id"] is None:
                    problems.add(
                        row, "company_credit_code", f"no registered company has credit code {code}"
                    )
            elif refs.get("company_id"):
                if refs["company_id"] in company_ids:
                    values["company_id"] = refs["company_id"]
                else:
                    problems.add(
                        row, "company_id", f"no registered company has number {refs['company_id']}"
                    )
            elif refs.get("company"):
                matches = company_by_name.get(refs["company"], [])
                if len(matches) == 1:
                    values["company_id"] = matches[0]
                elif not matches:
                    problems.add(
                        row, "company", f"no registered company is named {refs['company']!r}"
                    )
                else:
                    problems.add(
                        row,
                        "company",
                        f"{len(matches)} registered companies are named {refs['company']!r}: give "
                        "the credit code",
                    )
        if problems.bad(row):
            continue
        existing = existing_by_plate.get(values["plate"])
        after = _merged(
            existing, values, present, defaults={"active": True, "plate_color": "yellow"}
        )
        plans.append(_plan(row, existing, after, _TRUCK_FIELDS))
    return plans


# ----------------------------------------------------------------------------- terminals


_TERMINAL_FIELDS = ("device_id", "truck_id", "valid_from", "valid_to", "model")


def _plan_terminals(cur, rows: list[Row], problems: _Problems, tz: dt.tzinfo) -> list[_Plan]:
    parsed = []
    seen: dict = {}

    def when(value):
        return None if _text(value) is None else parse_time_text(value, tz)

    for row in rows:
        values: dict[str, Any] = {}
        present: set[str] = set()
        _, device = _take(problems, row, "device_id", _text, "the device id is required")
        if device and not DEVICE_ID.match(device):
            problems.add(row, "device_id", f"{device!r}: expected 1-64 letters, digits or _ . : -")
        _, plate = _take(problems, row, "plate", _text, "the truck's plate is required")
        _, start = _take(problems, row, "valid_from", when, "the start of the binding is required")
        has, end = _take(problems, row, "valid_to", when)
        if has:
            present.add("valid_to")
        if start and end and end <= start:
            problems.add(row, "valid_to", "must be after the start of the binding")
        has, model = _take(problems, row, "model", _text)
        if has:
            present.add("model")
        values.update(device_id=device, valid_from=start, valid_to=end, model=model)
        present |= {"device_id", "valid_from", "truck_id"}
        if device and start:
            _first_seen(
                problems, seen, (device, start), row, "valid_from", f"device {device} from {start}"
            )
        parsed.append((row, values, present, normalise_plate(plate) if plate else None))

    plates = [p for *_, p in parsed if p]
    cur.execute("SELECT plate, id FROM trucks WHERE plate = ANY(%s)", (plates,))
    truck_by_plate = dict(cur.fetchall())
    devices = sorted({v["device_id"] for _, v, _, _ in parsed if v["device_id"]})
    cols = ("id",) + _TERMINAL_FIELDS
    cur.execute(_select("terminals", cols, "device_id = ANY(%s)"), (devices,))
    # The bindings of each device as they will be: the stored ones, replaced by the file's
    # rows as they are accepted, so that overlaps are found within the file too.
    bindings: dict[str, dict[dt.datetime, dict]] = defaultdict(dict)
    for r in cur.fetchall():
        b = _as_dict(("id",) + _TERMINAL_FIELDS, r)
        bindings[b["device_id"]][b["valid_from"]] = b

    plans: list[_Plan] = []
    for row, values, present, plate in parsed:
        if plate:
            values["truck_id"] = truck_by_plate.get(plate)
            if values["truck_id"] is None:
                problems.add(row, "plate", f"no registered truck has plate {plate}")
        if problems.bad(row):
            continue
        device, start, end = values["device_id"], values["valid_from"], values["valid_to"]
        existing = bindings[device].get(start)
        after = _merged(existing, values, present, defaults={})
        end = after.get("valid_to")
        for other_start, other in bindings[device].items():
            if other_start == start or other["truck_id"] == after["truck_id"]:
                continue
            other_end = other["valid_to"]
            if (end is None or other_start < end) and (other_end is None or start < other_end):
                problems.add(
                    row,
                    "device_id",
                    f"device {device} is bound to another truck from {other_start.astimezone(tz):%Y-%m-%d %H:%M} "
                    "in that period",
                )
                break
        if problems.bad(row):
            continue
        plan = _plan(row, existing, after, _TERMINAL_FIELDS)
        bindings[device][start] = {"id": plan.row_id, **after}
        plans.append(plan)
    return plans


# ---------------------------------------------------------------------------------- write


_TABLES = {
    "companies": ("companies", _COMPANY_FIELDS, True),
    "trucks": ("trucks", _TRUCK_FIELDS, True),
    "terminals": ("terminals", _TERMINAL_FIELDS, False),
}


def _write(cur, kind: str, plan: _Plan) -> None:
    from psycopg2 import sql

    table, fields, has_updated_at = _TABLES[kind]
    values = [plan.values[name] for name in fields]
    if plan.row_id is None:
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                sql.Identifier(table),
                sql.SQL(", ").join(map(sql.Identifier, fields)),
                sql.SQL(", ").join(sql.Placeholder() * len(fields)),
            ),
            values,
        )
        return
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(name)) for name in fields]
    if has_updated_at:
        assignments.append(sql.SQL("updated_at = now()"))
    cur.execute(
        sql.SQL("UPDATE {} SET {} WHERE id = %s").format(
            sql.Identifier(table), sql.SQL(", ").join(assignments)
        ),
        [*values, plan.row_id],
    )


def import_rows(
    cur,
    kind: str,
    rows: list[Row],
    *,
    tz: dt.tzinfo,
    skip_bad: bool = False,
    dry_run: bool = False,
    source: str = "",
) -> ImportReport:
    """Check `rows` against the registry and store them (see the module docstring).

    Raises RegistryFileError with every problem, nothing written, when a row is bad and
    `skip_bad` is false. `dry_run` checks and counts but writes nothing."""
    problems = _Problems()
    report = ImportReport(kind)
    if kind == "companies":
        plans = _plan_companies(cur, rows, problems, report.flagged)
    elif kind == "trucks":
        plans = _plan_trucks(cur, rows, problems, report.flagged)
    elif kind == "terminals":
        plans = _plan_terminals(cur, rows, problems, tz)
    else:
        raise RegistryFileError([f"unknown registry {kind!r}"], source)
    errors = problems.all()
    if errors and not skip_bad:
        raise RegistryFileError(errors, source)
    report.skipped = errors
    good = [p for p in plans if not problems.bad(p.row)]
    for plan in good:
        if plan.row_id is None:
            report.created += 1
        elif plan.changed:
            report.updated += 1
        else:
            report.unchanged += 1
        if not dry_run and plan.changed:
            _write(cur, kind, plan)
    report.stored = not dry_run
    return report


# --------------------------------------------------------------------------------- export


def export_records(cur, kind: str, tz: dt.tzinfo) -> list[dict[str, str | None]]:
    """Every record of the registry as an import reads it back: one dict per row, in a
    stable order, values as text (times in city time with their offset)."""

    def yes(flag: bool) -> str:
        return "是" if flag else "否"

    if kind == "companies":
        cur.execute(
            """SELECT name, credit_code, legal_representative, phone, active FROM companies
               ORDER BY credit_code NULLS LAST, name, id"""
        )
        return [
            {"name": n, "credit_code": c, "legal_representative": r, "phone": p, "active": yes(a)}
            for n, c, r, p, a in cur.fetchall()
        ]
    if kind == "trucks":
        cur.execute(
            """SELECT t.plate, t.plate_color, t.trailer_plate, c.credit_code, c.name, t.active
               FROM trucks t LEFT JOIN companies c ON c.id = t.company_id ORDER BY t.plate"""
        )
        return [
            {
                "plate": plate,
                "plate_color": PLATE_COLOR_NAMES[color],
                "trailer_plate": trailer,
                "company_credit_code": code,
                # The name finds a company without a credit code; with one it is only read.
                "company": name,
                "active": yes(active),
            }
            for plate, color, trailer, code, name, active in cur.fetchall()
        ]
    if kind == "terminals":
        cur.execute(
            """SELECT m.device_id, t.plate, m.valid_from, m.valid_to, m.model
               FROM terminals m JOIN trucks t ON t.id = m.truck_id ORDER BY m.device_id, m.valid_from"""
        )

        def local(when: dt.datetime | None) -> str | None:
            return when.astimezone(tz).isoformat(sep=" ") if when else None

        return [
            {"device_id": d, "plate": p, "valid_from": local(f), "valid_to": local(t), "model": m}
            for d, p, f, t, m in cur.fetchall()
        ]
    raise ValueError(f"unknown registry {kind!r}")
