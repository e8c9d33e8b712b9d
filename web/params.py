"""Query-string parsing for pages and the API: bad input becomes a 400 with a message."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from flask import abort, current_app, request


def bad(message: str):
    abort(400, description=message)


def settings():
    return current_app.config["MUCK_SETTINGS"]


def int_arg(name: str, default: int, *, lo: int = 1, hi: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        bad(f"{name} must be an integer, got {raw[:40]!r}")
    if value < lo or (hi is not None and value > hi):
        bad(f"{name} must be between {lo} and {hi}" if hi else f"{name} must be at least {lo}")
    return value


def choice_arg(name: str, choices: tuple[str, ...], default: str | None = None) -> str | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        bad(f"{name} must be one of {', '.join(choices)}")
    return raw


@dataclass(frozen=True)
class Page:
    page: int
    per_page: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    def pages(self, total: int) -> int:
        return max(1, math.ceil(total / self.per_page))


def page_args(*, api: bool = False) -> Page:
    web = settings()["web"]
    per_page = (
        int_arg("per_page", web["page_size"], hi=web["api_max_per_page"])
        if api
        else web["page_size"]
    )
    return Page(int_arg("page", 1, hi=1_000_000), per_page)


def city_tz() -> ZoneInfo:
    return ZoneInfo(settings().city["timezone"])


def parse_time(raw: str, name: str) -> dt.datetime:
    """Epoch milliseconds, ISO-8601 with an offset, or a local time (city time zone) such as
    `2026-11-23T08:00` from a datetime-local input. Returns an aware UTC datetime."""
    raw = raw.strip()
    if raw.lstrip("-").isdigit():
        try:
            return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC)
        except (OverflowError, OSError, ValueError):
            bad(f"{name}: epoch milliseconds out of range")
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        bad(f"{name}: not a date and time: {raw[:40]!r} (use 2026-11-23T08:00 or ISO-8601)")
    if value.tzinfo is None:
        value = value.replace(tzinfo=city_tz())
    return value.astimezone(dt.UTC)


def time_range(default_hours: float = 1.0) -> tuple[dt.datetime, dt.datetime]:
    """`from`/`to` query parameters, validated: to after from, span within web.track_max_hours."""
    now = dt.datetime.now(dt.UTC)
    raw_to, raw_from = request.args.get("to"), request.args.get("from")
    end = parse_time(raw_to, "to") if raw_to else now
    start = parse_time(raw_from, "from") if raw_from else end - dt.timedelta(hours=default_hours)
    if end <= start:
        bad("to must be after from")
    max_hours = settings()["web"]["track_max_hours"]
    if end - start > dt.timedelta(hours=max_hours):
        bad(f"the range may span at most {max_hours} hours")
    return start, end


def to_local_input(value: dt.datetime) -> str:
    """A UTC datetime as the value of a datetime-local input in the city time zone."""
    return value.astimezone(city_tz()).strftime("%Y-%m-%dT%H:%M")


# Control characters (C0 and DEL) have no business in any parameter: PostgreSQL refuses a
# NUL in text (a 500 before this check), and the others end up in logs, CSV cells and page
# text. Form fields keep tab and line breaks (text areas); query strings keep none.
_QUERY_FORBIDDEN = {chr(c) for c in range(0x20)} | {"\x7f"}
_FORM_FORBIDDEN = _QUERY_FORBIDDEN - {"\t", "\n", "\r"}
MAX_QUERY_VALUE = 1000
MAX_FORM_VALUE = 20_000


def _check(source: str, name: str, value: str, forbidden: set[str], limit: int) -> None:
    if len(value) > limit:
        bad(f"{source} parameter {name[:40]!r}: longer than {limit} characters")
    if not forbidden.isdisjoint(value):
        bad(f"{source} parameter {name[:40]!r}: control characters are not allowed")


def _check_json(value, path: str, depth: int = 0) -> None:
    if depth > 20:
        bad(f"JSON body: nested deeper than 20 levels at {path}")
    if isinstance(value, str):
        _check("JSON", path, value, _FORM_FORBIDDEN, MAX_FORM_VALUE)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check("JSON", f"{path}.{key}", str(key), _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
            _check_json(item, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)


def reject_bad_characters() -> None:
    """Before every request: a 400 naming the parameter for a control character or an
    over-long value in the query string, the path, a form field or a JSON body."""
    for name, value in request.args.items(multi=True):
        _check("query", name, name, _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
        _check("query", name, value, _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
    for name, value in (request.view_args or {}).items():
        if isinstance(value, str):
            _check("path", name, value, _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            for name, value in request.form.items(multi=True):
                _check("form", name, name, _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
                _check("form", name, value, _FORM_FORBIDDEN, MAX_FORM_VALUE)
            for name, upload in request.files.items(multi=True):
                _check("form", name, upload.filename or "", _QUERY_FORBIDDEN, MAX_QUERY_VALUE)
        elif request.is_json:
            body = request.get_json(silent=True)
            if body is None and request.get_data():
                bad("JSON body: not valid JSON")
            _check_json(body, "$")
