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
