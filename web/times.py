"""Times as users see them: in the city's time zone (`city.timezone`), labelled with its UTC
offset, e.g. `2026-12-03 15:04:05 (UTC+8)`. Every page, export and JSON answer goes through
these helpers (the template filter and global `localtime`, the JavaScript `fmtTime` in
web/static/map_common.js mirrors them), so that no time is ever shown in the server's or the
browser's own zone, or without saying which zone it is in."""

from __future__ import annotations

import datetime as dt

from web.params import city_tz


def offset_label(value: dt.datetime) -> str:
    """The city zone's offset at `value`: `UTC+8`, `UTC+5:30`, `UTC-3`, `UTC`."""
    offset = value.astimezone(city_tz()).utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    if minutes == 0:
        return "UTC"
    sign = "+" if minutes > 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours}" + (f":{rest:02d}" if rest else "")


def zone_label() -> str:
    """The label of the city zone now (column headers of exports)."""
    return offset_label(dt.datetime.now(dt.UTC))


def _aware(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: times are stored as timestamptz (UTC)")
    return value


def local_time(value: dt.datetime | str | None, *, label: bool = True) -> str:
    """`2026-12-03 15:04:05 (UTC+8)` (`label=False`: without the zone, for a cell whose column
    header names it); "" for None. Accepts an aware datetime or an ISO-8601 string."""
    if value is None or value == "":
        return ""
    value = _aware(value)
    text = value.astimezone(city_tz()).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} ({offset_label(value)})" if label else text


def local_iso(value: dt.datetime | str | None) -> str | None:
    """ISO-8601 in the city zone, its offset the label (`2026-12-03T15:04:05+08:00`): the
    form of times in JSON answers (the same instant as UTC, readable as local time)."""
    if value is None:
        return None
    return _aware(value).astimezone(city_tz()).isoformat()
