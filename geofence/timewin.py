"""Weekly time windows and ban-day intervals, evaluated in the city's local time.

A window is `{"days": <day set>, "start": "HH:MM", "end": "HH:MM"}`:

- days: "daily", "weekdays" (Mon-Fri), "weekends" (Sat, Sun) or a list of ISO weekday
  numbers 1 (Monday) ... 7 (Sunday); default "daily".
- start/end: local wall-clock time; "24:00" is allowed as an end. A window whose end is not
  after its start crosses midnight: it starts on the listed day and ends the next morning
  (a Friday 21:00-04:00 window covers Saturday 00:00-04:00 too). start == end is rejected
  (use 00:00-24:00 for a whole day).

Windows become a bitmap over the 10,080 minutes of a week, so that testing a fix is one
array lookup at its local minute of the week.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

MINUTES_PER_WEEK = 7 * 1440
_DAY_SETS = {
    "daily": (1, 2, 3, 4, 5, 6, 7),
    "weekdays": (1, 2, 3, 4, 5),
    "weekends": (6, 7),
}
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$")


class WindowError(ValueError):
    """A time window that cannot be used; the message says why."""


def parse_hhmm(text: Any, *, allow_24: bool = False) -> int:
    """'07:30' -> 450 (minutes after midnight)."""
    if not isinstance(text, str) or not _HHMM.match(text.strip()):
        raise WindowError(f"time {text!r} is not HH:MM")
    hours, minutes = (int(part) for part in text.strip().split(":"))
    if minutes >= 60 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise WindowError(f"time {text!r} is out of range")
    return hours * 60 + minutes


def parse_days(days: Any) -> tuple[int, ...]:
    if days is None:
        return _DAY_SETS["daily"]
    if isinstance(days, str):
        try:
            return _DAY_SETS[days.strip().lower()]
        except KeyError:
            raise WindowError(
                f"days {days!r} is not one of daily, weekdays, weekends or a list of 1-7"
            ) from None
    if (
        isinstance(days, Sequence)
        and days
        and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 7 for d in days)
    ):
        return tuple(sorted(set(days)))
    raise WindowError(f"days {days!r} is not one of daily, weekdays, weekends or a list of 1-7")


WINDOW_FORMS = (
    '[{"start": "07:00", "end": "09:00", "days": "daily"}], [["07:00", "09:00"]], '
    '["07:00", "09:00"] or "07:00-09:00"'
)
_RANGE = re.compile(r"^\s*(\d{1,2}:\d{2})\s*(?:-|–|—|~|～|至|到)\s*(\d{1,2}:\d{2})\s*$")


def _is_hhmm(value: Any) -> bool:
    return isinstance(value, str) and bool(_HHMM.match(value.strip()))


def coerce_windows(windows: Any) -> Any:
    """The common spellings of windows as the object form: one "07:00-09:00" text, one
    ["07:00", "09:00"] pair, or a list of objects, pairs and "HH:MM-HH:MM" texts. Anything
    else is returned as it is, for normalise_windows to refuse by name."""
    if isinstance(windows, str):
        match = _RANGE.match(windows)
        return [{"start": match.group(1), "end": match.group(2)}] if match else windows
    if isinstance(windows, list) and len(windows) == 2 and all(map(_is_hhmm, windows)):
        return [{"start": windows[0], "end": windows[1]}]
    if not isinstance(windows, list):
        return windows
    out: list[Any] = []
    for window in windows:
        if isinstance(window, list | tuple) and len(window) == 2 and all(map(_is_hhmm, window)):
            window = {"start": window[0], "end": window[1]}
        elif isinstance(window, str) and (match := _RANGE.match(window)):
            window = {"start": match.group(1), "end": match.group(2)}
        out.append(window)
    return out


def normalise_windows(windows: Any) -> list[dict[str, Any]]:
    """Validate a list of windows (in any form of `coerce_windows`); returns them in canonical
    form (objects, days as a list)."""
    windows = coerce_windows(windows)
    if not isinstance(windows, list) or not windows:
        raise WindowError(f"expected a non-empty list of time windows: {WINDOW_FORMS}")
    out = []
    for i, window in enumerate(windows):
        if not isinstance(window, dict):
            raise WindowError(
                f"window {i} ({window!r}) is not a time window: expected {WINDOW_FORMS}"
            )
        unknown = set(window) - {"days", "start", "end"}
        if unknown:
            raise WindowError(f"window {i} has unknown keys {sorted(unknown)}")
        if "start" not in window or "end" not in window:
            raise WindowError(f"window {i} needs start and end (HH:MM)")
        try:
            days = parse_days(window.get("days"))
            start = parse_hhmm(window["start"])
            end = parse_hhmm(window["end"], allow_24=True)
        except WindowError as exc:
            raise WindowError(f"window {i}: {exc}") from None
        if start == end:
            raise WindowError(
                f"window {i}: start equals end ({window['start']}); use 00:00-24:00 for all day"
            )
        out.append({"days": list(days), "start": window["start"], "end": window["end"]})
    return out


def window_bitmap(windows: list[dict[str, Any]]) -> np.ndarray:
    """Boolean array of the minutes of the week (Monday 00:00 = 0) the windows cover."""
    bits = np.zeros(MINUTES_PER_WEEK, dtype=bool)
    for window in windows:
        start = parse_hhmm(window["start"])
        end = parse_hhmm(window["end"], allow_24=True)
        length = end - start if end > start else end + 1440 - start
        for day in parse_days(window.get("days")):
            first = (day - 1) * 1440 + start
            minutes = (first + np.arange(length)) % MINUTES_PER_WEEK
            bits[minutes] = True
    return bits


class LocalClock:
    """Epoch seconds -> local minute of the week, vectorised, honouring DST transitions.

    UTC offsets are looked up per distinct 15-minute bucket spanned by the batch through a
    coarse scan plus bisection, so that the zoneinfo calls are per transition, not per fix.
    (Every real offset change happens on a 15-minute boundary.)
    """

    def __init__(self, tz: str | dt.tzinfo) -> None:
        self.tz = ZoneInfo(tz) if isinstance(tz, str) else tz

    def offset(self, t: int) -> int:
        when = dt.datetime.fromtimestamp(int(t), dt.UTC).astimezone(self.tz)
        return int(when.utcoffset().total_seconds())

    def offsets(self, t: np.ndarray) -> np.ndarray:
        """UTC offset in seconds at each epoch second of `t` (int64 array)."""
        if t.size == 0:
            return np.zeros(0, dtype=np.int64)
        lo, hi = int(t.min()), int(t.max())
        step = 6 * 3600
        if hi - lo <= 40 * 86400:
            grid = list(range(lo - lo % 900, hi + step, step))
        else:  # a batch spanning years (e.g. one bogus timestamp): sample where fixes are
            buckets = np.unique(np.floor_divide(t, step))
            grid = sorted({int(b) * step for b in buckets} | {int(b + 1) * step for b in buckets})
            grid[0] = min(grid[0], lo - lo % 900)
        if grid[-1] < hi:
            grid.append(hi)
        change_at: list[int] = []  # first second of each new offset
        values = [self.offset(grid[0])]
        previous = grid[0]
        for point in grid[1:]:
            value = self.offset(point)
            if value != values[-1]:
                a, b = previous, point  # offset(a) == values[-1] != offset(b)
                while b - a > 900:
                    mid = (a + b) // 2
                    mid -= mid % 900
                    if mid <= a:
                        break
                    if self.offset(mid) == values[-1]:
                        a = mid
                    else:
                        b = mid
                change_at.append(b)
                values.append(value)
            previous = point
        if not change_at:
            return np.full(t.shape, values[0], dtype=np.int64)
        which = np.searchsorted(np.asarray(change_at, dtype=np.int64), t, side="right")
        return np.asarray(values, dtype=np.int64)[which]

    def minute_of_week(self, t: np.ndarray) -> np.ndarray:
        local = t + self.offsets(t)
        days = np.floor_divide(local, 86400)
        weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
        return (weekday * 1440 + np.floor_divide(local - days * 86400, 60)).astype(np.int64)

    def local_midnight(self, day: dt.date) -> int:
        """Epoch seconds of 00:00 local time on `day`."""
        return int(dt.datetime.combine(day, dt.time(0), self.tz).timestamp())

    def local_instant(self, day: dt.date, minute: int) -> int:
        """Epoch seconds of `minute` minutes after local midnight (24:00 = next midnight)."""
        extra, minute = divmod(minute, 1440)
        day = day + dt.timedelta(days=extra)
        when = dt.datetime.combine(day, dt.time(minute // 60, minute % 60), self.tz)
        return int(when.timestamp())


def to_epoch_seconds(times: Any) -> np.ndarray:
    """Fix times as int64 epoch seconds: accepts numbers (epoch seconds) or datetime64."""
    arr = np.asarray(times)
    if np.issubdtype(arr.dtype, np.datetime64):
        if np.isnat(arr).any():
            raise ValueError("fix times contain NaT")
        return arr.astype("datetime64[s]").astype(np.int64)
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("fix times must be finite epoch seconds")
    return np.floor(arr).astype(np.int64)
