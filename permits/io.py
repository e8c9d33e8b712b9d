"""Permit files: CSV or JSON, English or Chinese column names, checked for form.

Every problem of a file is collected (by line and field) before anything is stored; the
records are checked against the database by `permits.store.import_permits`. File formats
are described in docs/permits-and-black-trucks.md.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.problems import problem_list
from geofence.timewin import WINDOW_FORMS, WindowError, coerce_windows, normalise_windows
from registry.validation import CREDIT_CODE_FORMAT, normalise_plate, plate_problem

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
    "company_id": ("company_id", "company_registry_id", "企业编号"),
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


class PermitError(ValueError):
    """A permit operation that cannot be done; the message says why."""


class PermitImportError(PermitError):
    """A permit file that cannot be imported; `errors` lists every problem found."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        head, text = problem_list(errors, source)
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
    company_id: int | None = None  # the registry's id of the company, when the file gives it

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
        raise PermitError(
            f"operating hours {value!r} are not time windows: expected {WINDOW_FORMS}"
        )
    value = coerce_windows(value)  # ["21:00", "05:00"], [["21:00", "05:00"]], ...
    windows: list[dict[str, Any]] = []
    for item in value:
        if isinstance(item, str):
            match = _RANGE.match(item.strip())
            if not match:
                raise PermitError(
                    f"operating hours {item!r} are not HH:MM-HH:MM: expected {WINDOW_FORMS}"
                )
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


def _company_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = _text(value)
    if text is None:
        return None
    if not text.isdigit():
        raise PermitError(f"{text!r} is not a company id (a number from the registry)")
    return int(text)


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
    take("company_id", _company_id)
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
    company = values.get("company")
    if company and not values.get("company_credit_code") and not values.get("company_id"):
        # The company column may hold the credit code or the registry's id instead of a name.
        if CREDIT_CODE_FORMAT.match(company.upper()):
            values["company_credit_code"], values["company"] = company.upper(), None
        elif company.isdigit():
            values["company_id"], values["company"] = int(company), None
    if "company" in values and "company_credit_code" in values and "company_id" in values:
        if not (values["company"] or values["company_credit_code"] or values["company_id"]):
            errors.append(
                f"{where('company')}: the company (name, credit code or registry id) is required"
            )
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
        company_id=values["company_id"],
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
