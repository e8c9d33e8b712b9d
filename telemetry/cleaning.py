"""Implied-speed filter: a jump between fixes of one device that no truck can drive.

The reference is the device's newest accepted fix. Late fixes (blind-area re-uploads) are
compared with it too: two real positions can never be further apart than the truck could
drive in the time between them, whichever arrived first. After `reset_after` consecutive
rejections the reference itself is taken to be the glitch and is replaced, so one bad fix
cannot block a device for good. State lives in memory: after a restart the first fix of each
device is accepted unchecked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from telemetry.validation import Fix, Rejection

_EARTH_RADIUS_M = 6_371_008.8


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


@dataclass(slots=True)
class _Reference:
    fix_ms: int
    lat: float
    lon: float
    rejected_in_a_row: int = 0


class ImpliedSpeedFilter:
    def __init__(self, max_speed_kmh: float, min_distance_m: float, reset_after: int = 3) -> None:
        self.max_speed_ms = max_speed_kmh / 3.6
        self.min_distance_m = min_distance_m
        self.reset_after = reset_after
        self._last: dict[str, _Reference] = {}

    def check(self, fix: Fix) -> Rejection | None:
        ref = self._last.get(fix.device_id)
        if ref is None:
            self._last[fix.device_id] = _Reference(fix.fix_ms, fix.lat, fix.lon)
            return None
        dt_s = abs(fix.fix_ms - ref.fix_ms) / 1000.0
        if dt_s > 0:
            distance = haversine_m(ref.lat, ref.lon, fix.lat, fix.lon)
            if distance > self.min_distance_m and distance / dt_s > self.max_speed_ms:
                ref.rejected_in_a_row += 1
                if ref.rejected_in_a_row < self.reset_after:
                    return Rejection(
                        "implied_speed",
                        f"{distance:.0f} m in {dt_s:.0f} s ({distance / dt_s * 3.6:.0f} km/h)",
                        fix.raw,
                    )
                self._last[fix.device_id] = _Reference(fix.fix_ms, fix.lat, fix.lon)
                return None
        ref.rejected_in_a_row = 0
        if fix.fix_ms > ref.fix_ms:
            ref.fix_ms, ref.lat, ref.lon = fix.fix_ms, fix.lat, fix.lon
        return None
