"""Which truck a device belonged to at a fix time, from the registry's terminal bindings.

Held in memory and refreshed periodically; a device not found is looked up again at most
once per `recheck_s`, so a terminal registered a moment ago is bound within seconds.
"""

from __future__ import annotations

import bisect
import time
from collections import defaultdict


class TerminalBindings:
    def __init__(self, refresh_s: float = 60.0, recheck_s: float = 5.0) -> None:
        self.refresh_s = refresh_s
        self.recheck_s = recheck_s
        self._by_device: dict[str, list[tuple[int, int, int]]] = {}
        self._loaded_at = -1e18
        self._unknown_checked: dict[str, float] = {}

    def refresh(self, cur) -> None:
        cur.execute(
            """SELECT device_id,
                      (extract(epoch FROM valid_from) * 1000)::bigint,
                      COALESCE((extract(epoch FROM valid_to) * 1000)::bigint, 9223372036854775807),
                      truck_id
               FROM terminals ORDER BY device_id, valid_from"""
        )
        table: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for device_id, start, end, truck_id in cur.fetchall():
            table[device_id].append((start, end, truck_id))
        self._by_device = dict(table)
        self._loaded_at = time.monotonic()
        self._unknown_checked.clear()

    def prepare(self, cur, device_ids: set[str]) -> None:
        """Refresh when stale, or when a device unseen for `recheck_s` appears."""
        now = time.monotonic()
        if now - self._loaded_at > self.refresh_s:
            self.refresh(cur)
            return
        unknown = [
            d
            for d in device_ids
            if d not in self._by_device
            and now - self._unknown_checked.get(d, -1e18) > self.recheck_s
        ]
        if not unknown:
            return
        cur.execute("SELECT 1 FROM terminals WHERE device_id = ANY(%s) LIMIT 1", (unknown,))
        if cur.fetchone() is not None:
            self.refresh(cur)
        else:
            for device in unknown:
                self._unknown_checked[device] = now

    def truck_at(self, device_id: str, fix_ms: int) -> int | None:
        periods = self._by_device.get(device_id)
        if not periods:
            return None
        index = bisect.bisect_right(periods, (fix_ms, 2**63, 2**63)) - 1
        if index >= 0:
            start, end, truck_id = periods[index]
            if start <= fix_ms < end:
                return truck_id
        return None
