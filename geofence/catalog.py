"""The zone catalogue a long-running process keeps in memory, reloaded when zones change."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from core.db import consistent_snapshot
from geofence.index import GeofenceConfig, GeofenceIndex
from geofence.model import BanDay, Zone
from geofence.store import current_version, load_ban_days, load_zones

log = logging.getLogger(__name__)


class ZoneCatalog:
    """Holds the current `GeofenceIndex` and swaps in a new one when the database changes.

    The version row (geofence_version) is bumped in the same transaction as any change to
    zones or ban days, so `refresh_if_changed` costs one primary-key lookup when nothing
    changed. The version is read in the same REPEATABLE READ snapshot as the zones, so an
    index is never labelled with a version newer than its data.

    Use `catalog.index` for each batch (grab it once per batch: a refresh replaces the
    attribute with a new immutable index, never mutates the one in use).
    """

    def __init__(self, settings: Any = None, *, poll_interval_s: float | None = None) -> None:
        self.settings = settings
        self.city = (
            dict(settings.city)
            if settings is not None
            else {"timezone": "Asia/Shanghai", "center_lon": 114.06, "center_lat": 22.55}
        )
        self.config = GeofenceConfig.from_settings(settings)
        section = settings.sections.get("geofence", {}) if settings is not None else {}
        self.poll_interval_s = (
            poll_interval_s if poll_interval_s is not None else section.get("reload_poll_s", 2.0)
        )
        self.version: int | None = None
        self.index = GeofenceIndex([], city=self.city, config=self.config, version=None)
        self._last_poll = float("-inf")
        self._worker: threading.Thread | None = None

    @classmethod
    def from_zones(
        cls, zones: Iterable[Zone], ban_days: Iterable[BanDay] = (), settings: Any = None
    ) -> ZoneCatalog:
        """A catalogue of the given zones and ban days, with no database behind it (rule tests
        build their city in memory this way; tests/compliance/frames.py). Its version is None:
        `load` or a refresh with a connection replaces the zones with the database's."""
        catalog = cls(settings)
        catalog.index = GeofenceIndex(
            zones, ban_days, city=catalog.city, config=catalog.config, version=None
        )
        return catalog

    def load(self, conn) -> GeofenceIndex:
        """Load every active zone and ban day now, whatever the version."""
        started = time.perf_counter()
        with consistent_snapshot(conn):
            version = current_version(conn)
            zones = load_zones(conn, active_only=True)
            bans = load_ban_days(conn)
        index = GeofenceIndex(
            zones,
            bans,
            city=self.city,
            config=self.config,
            version=version,
            cache=self.index.build_cache,  # rebuild only what changed
        )
        for code, reason in index.skipped:
            log.warning("zone %s not loaded: %s", code, reason)
        self.index = index
        self.version = version
        log.info(
            "geofence catalogue version %s: %d zones loaded in %.2f s (%d parts reused)",
            version,
            len(index),
            time.perf_counter() - started,
            index.cache_hits,
        )
        return index

    def refresh_if_changed(self, conn) -> bool:
        """Reload when the catalogue version differs from the loaded one; True if reloaded."""
        self._last_poll = time.monotonic()
        version = current_version(conn)
        if not conn.autocommit:
            conn.commit()  # do not hold a transaction open between polls
        if version == self.version:
            return False
        self.load(conn)
        return True

    def refresh_in_background(self) -> threading.Thread | None:
        """Check the version and, if it changed, rebuild on a worker thread with its own
        connection (settings.database_url); `index` keeps serving the old zones until the
        new index is swapped in. Returns the thread (None when nothing changed or a rebuild
        is already running)."""
        from core.db import connect_settings

        if self._worker is not None and self._worker.is_alive():
            return None
        conn = connect_settings(self.settings)
        try:
            changed = current_version(conn) != self.version
            conn.commit()
        except BaseException:
            conn.close()
            raise
        if not changed:
            conn.close()
            return None

        def _run() -> None:
            try:
                self.load(conn)
            except Exception:
                log.exception("geofence catalogue reload failed; keeping the previous zones")
            finally:
                conn.close()

        self._worker = threading.Thread(target=_run, name="geofence-reload", daemon=True)
        self._worker.start()
        return self._worker

    def maybe_refresh(self, conn) -> bool:
        """`refresh_if_changed`, at most once per geofence.reload_poll_s (call it per batch)."""
        if time.monotonic() - self._last_poll < self.poll_interval_s:
            return False
        return self.refresh_if_changed(conn)
