"""Both black-truck detections together: once (`scan`), or as the collector's clock job
(`ScanJob`)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from black_trucks.devices import DeviceScanReport, scan_unregistered_devices
from black_trucks.sightings import MatchReport, match_new_sightings

log = logging.getLogger(__name__)


def scan(
    conn,
    settings: Any,
    *,
    now: float | dt.datetime | None = None,
    zones: Any = None,
    incremental: bool = False,
) -> tuple[MatchReport, DeviceScanReport]:
    """Both detections once: sightings, then unregistered terminals (`muck black-trucks scan`).
    `zones`: a loaded ZoneCatalog to reuse (building one is expensive); `incremental`: see
    `scan_unregistered_devices`."""
    started = time.perf_counter()
    match = match_new_sightings(conn, settings, now=now)
    devices = scan_unregistered_devices(
        conn, settings, now=now, zones=zones, incremental=incremental
    )
    log.debug("black-truck scan took %.2f s", time.perf_counter() - started)
    return match, devices


# How often the scan recomputes every unregistered device, not only the ones with new fixes
# (catches late commits and device-days whose fixes are gone).
_FULL_DEVICE_SCAN_S = 3600.0


class ScanJob:
    """The collector's clock job (every compliance.black_truck_scan_s): only the devices with
    new unregistered fixes; hourly (and the first time) all of them. `zones` is the rules' loaded ZoneCatalog,
    reused (building one takes seconds)."""

    def __init__(self, settings: Any, zones: Any) -> None:
        self.settings = settings
        self.zones = zones
        self._last_full_device_scan = float("-inf")

    def __call__(self, conn) -> None:
        full = time.monotonic() - self._last_full_device_scan >= _FULL_DEVICE_SCAN_S
        scan(conn, self.settings, zones=self.zones, incremental=not full)
        if full:
            self._last_full_device_scan = time.monotonic()
