"""When each zone of an index counts, for the (fix, zone) pairs of a classification:
validity dates, weekly windows (restricted zones' bans, disposal sites' opening hours) and
ban days (holidays, exam days), all in the city's local time.

Everything is an array lookup on the pairs: validity dates are epoch-second bounds per zone,
windows a minute-of-week bitmap per zone (geofence.timewin), and ban days merged intervals
per zone, searched with one `searchsorted` on keys zone << 40 | epoch seconds.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from geofence.model import DISPOSAL, RESTRICTED, BanDay, Zone
from geofence.timewin import LocalClock, parse_hhmm, window_bitmap

_NEVER = np.iinfo(np.int64).max
_EARLIEST = np.iinfo(np.int64).min
_KEY_SHIFT = 40  # ban-interval keys: zone << 40 | seconds


class ZoneSchedule:
    """Validity dates, window bitmaps and ban intervals of the zones of one index (by zone
    index, the positions in `zones`)."""

    def __init__(
        self,
        zones: Sequence[Zone],
        kind: np.ndarray,
        code_index: dict[str, int],
        ban_days: Sequence[BanDay],
        clock: LocalClock,
    ) -> None:
        self.clock = clock
        n = len(zones)
        self.valid_from_s = np.full(n, _EARLIEST, dtype=np.int64)
        self.valid_to_s = np.full(n, _NEVER, dtype=np.int64)
        for i, z in enumerate(zones):
            if z.valid_from is not None:
                self.valid_from_s[i] = clock.local_midnight(z.valid_from)
            if z.valid_to is not None:
                self.valid_to_s[i] = clock.local_midnight(z.valid_to + dt.timedelta(days=1))
        self._dated = (self.valid_from_s != _EARLIEST) | (self.valid_to_s != _NEVER)
        self._timed = (kind == RESTRICTED) | (kind == DISPOSAL)
        self._kind = kind
        self._build_windows(zones)
        self._build_ban_intervals(kind, code_index, ban_days)

    def _build_windows(self, zones: Sequence[Zone]) -> None:
        """Weekly bitmaps: restricted zones' ban windows, disposal sites' opening hours."""
        rows: list[np.ndarray] = []
        self._win_row = np.full(len(zones), -1, dtype=np.int32)  # -1 = always
        for i, zone in enumerate(zones):
            key = {"restricted": "windows", "disposal": "opening_hours"}.get(zone.kind)
            windows = zone.attributes.get(key) if key else None
            if windows:
                self._win_row[i] = len(rows)
                rows.append(window_bitmap(windows))
        self._win_bits = np.array(rows) if rows else np.zeros((0, 10080), dtype=bool)

    def _build_ban_intervals(
        self, kind: np.ndarray, code_index: dict[str, int], ban_days: Sequence[BanDay]
    ) -> None:
        restricted = np.flatnonzero(kind == RESTRICTED)
        intervals: dict[int, list[tuple[int, int]]] = {}
        for ban in ban_days:
            if ban.zone_code is None:
                targets = restricted.tolist()
            else:
                i = code_index.get(ban.zone_code)
                targets = [i] if i is not None and kind[i] == RESTRICTED else []
            if ban.start is None or ban.end is None:
                start_min, end_min = 0, 1440
            else:
                start_min = parse_hhmm(ban.start.strftime("%H:%M"))
                end_min = parse_hhmm(ban.end.strftime("%H:%M"))
                if end_min <= start_min:
                    end_min += 1440
            start = self.clock.local_instant(ban.day, start_min)
            end = self.clock.local_instant(ban.day, end_min)
            for zone in targets:
                intervals.setdefault(int(zone), []).append((start, end))
        starts: list[int] = []
        ends: list[int] = []
        for zone in sorted(intervals):
            merged: list[list[int]] = []
            for s, e in sorted(intervals[zone]):
                s, e = max(s, 0), min(e, (1 << _KEY_SHIFT) - 1)
                if e <= s:
                    continue
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            for s, e in merged:
                starts.append((zone << _KEY_SHIFT) | s)
                ends.append((zone << _KEY_SHIFT) | e)
        self._ban_start = np.asarray(starts, dtype=np.int64)
        self._ban_end = np.asarray(ends, dtype=np.int64)

    def apply(
        self, fix: np.ndarray, zone: np.ndarray, t: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The (fix, zone) pairs whose zone is within its validity dates at the fix time `t`
        (epoch seconds per fix), and per pair whether it is active then: a restricted zone's
        ban in force (window or ban day), a disposal site open; True for other kinds."""
        if self._dated.any():
            tt = t[fix]
            valid = (tt >= self.valid_from_s[zone]) & (tt < self.valid_to_s[zone])
            if not valid.all():
                fix, zone = fix[valid], zone[valid]
        active = np.ones(fix.size, dtype=bool)
        timed = np.flatnonzero(self._timed[zone])
        if timed.size:
            zt, ttt = zone[timed], t[fix[timed]]
            kinds_t = self._kind[zt]
            rows = self._win_row[zt]
            act = rows < 0
            windowed = ~act
            if windowed.any():
                mow = self.clock.minute_of_week(ttt[windowed])
                act[windowed] = self._win_bits[rows[windowed], mow]
            if self._ban_start.size:
                key = (zt.astype(np.int64) << _KEY_SHIFT) | np.clip(ttt, 0, (1 << _KEY_SHIFT) - 1)
                k = np.searchsorted(self._ban_start, key, side="right") - 1
                banned = (k >= 0) & (key < self._ban_end[np.maximum(k, 0)])
                act |= banned & (kinds_t == RESTRICTED)
            active[timed] = act
        return fix, zone, active
