"""The in-memory permit catalogue the rules query, reloaded when the permit tables change.

- Validity: local dates (city time zone), both inclusive (00:00 on valid_from to 24:00 on
  valid_to). Only `active` permits are valid; `suspended` and `revoked` never are.
- Operating hours: geofence windows (`geofence.timewin`), local time, an end not after the
  start crosses midnight and belongs to the day it starts on; no windows = any time.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.db import consistent_snapshot
from geofence.timewin import LocalClock, window_bitmap
from permits.lookup import PermitLookup
from permits.store import PermitRow, all_permit_rows, current_version

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Permit:
    """A permit as the rules see it (immutable; from `PermitCatalog`)."""

    id: int
    number: str
    company_id: int
    truck_ids: frozenset[int]
    origin_site: str
    disposal_sites: tuple[str, ...]
    routes: tuple[str, ...]
    operating_hours: tuple[dict[str, Any], ...]
    valid_from: dt.date
    valid_to: dt.date
    status: str
    authority: str | None
    start_s: int  # epoch seconds of 00:00 local on valid_from (inside)
    end_s: int  # epoch seconds of 00:00 local the day after valid_to (outside)
    _clock: LocalClock = field(repr=False)
    _hours: np.ndarray | None = field(repr=False)  # minute-of-week bitmap; None = any time

    def valid_at(self, epoch_s: float) -> bool:
        """Active and within its validity dates at that instant."""
        return self.status == "active" and self.start_s <= epoch_s < self.end_s

    def operating_at(self, epoch_s: float) -> bool:
        """Inside the permitted operating hours (city local time); always True without hours."""
        if self._hours is None:
            return True
        minute = self._clock.minute_of_week(np.array([int(epoch_s // 1)], dtype=np.int64))
        return bool(self._hours[minute[0]])

    def operating_mask(self, epoch_s: Any) -> np.ndarray:
        """`operating_at` for an array of epoch seconds."""
        t = np.floor(np.asarray(epoch_s, dtype=np.float64)).astype(np.int64)
        if self._hours is None:
            return np.ones(t.shape, dtype=bool)
        return self._hours[self._clock.minute_of_week(t)]

    def valid_mask(self, epoch_s: Any) -> np.ndarray:
        """`valid_at` for an array of epoch seconds."""
        t = np.asarray(epoch_s, dtype=np.float64)
        if self.status != "active":
            return np.zeros(t.shape, dtype=bool)
        return (t >= self.start_s) & (t < self.end_s)


class PermitCatalog:
    """Every permit in memory, indexed by truck; reloaded when the permit tables change.

    Same contract as `geofence.catalog.ZoneCatalog`: `permit_version` is bumped by statement
    triggers in the transaction that changes permits, so `refresh_if_changed` costs one
    primary-key read when nothing changed; the permits are read in one REPEATABLE READ
    snapshot with their version. A refresh replaces the catalogue's dictionaries; `Permit`
    objects are immutable.
    """

    def __init__(self, settings: Any = None, *, poll_interval_s: float | None = None) -> None:
        tz = settings.city["timezone"] if settings is not None else "Asia/Shanghai"
        self.clock = LocalClock(tz)
        section = settings.sections.get("compliance", {}) if settings is not None else {}
        self.poll_interval_s = (
            poll_interval_s
            if poll_interval_s is not None
            else float(section.get("permits_reload_poll_s", 2.0))
        )
        self.version: int | None = None
        self.permits: dict[int, Permit] = {}
        self.by_number: dict[str, Permit] = {}
        self.by_truck: dict[int, tuple[Permit, ...]] = {}
        self.lookup = PermitLookup([], self.clock)
        self._last_poll = float("-inf")

    def __len__(self) -> int:
        return len(self.permits)

    def _permit(self, row: PermitRow) -> Permit:
        hours = tuple(row.operating_hours or ())
        return Permit(
            id=row.id,
            number=row.number,
            company_id=row.company_id,
            truck_ids=frozenset(row.truck_ids),
            origin_site=row.origin_site,
            disposal_sites=row.disposal_sites,
            routes=row.routes,
            operating_hours=hours,
            valid_from=row.valid_from,
            valid_to=row.valid_to,
            status=row.status,
            authority=row.authority,
            start_s=self.clock.local_midnight(row.valid_from),
            end_s=self.clock.local_midnight(row.valid_to + dt.timedelta(days=1)),
            _clock=self.clock,
            _hours=window_bitmap(list(hours)) if hours else None,
        )

    def load(self, conn) -> None:
        """Load every permit now, whatever the version."""
        started = time.perf_counter()
        with consistent_snapshot(conn), conn.cursor() as cur:
            cur.execute("SELECT version FROM permit_version WHERE id = 1")
            found = cur.fetchone()
            rows = all_permit_rows(cur)
        self._use(rows)
        self.version = int(found[0]) if found else 0
        log.info(
            "permit catalogue version %s: %d permits loaded in %.3f s",
            self.version,
            len(self.permits),
            time.perf_counter() - started,
        )

    @classmethod
    def from_rows(cls, rows: Iterable[PermitRow], settings: Any = None) -> PermitCatalog:
        """A catalogue of the given permits, with no database behind it (rule tests build
        their permits in memory this way; tests/compliance/frames.py). Its version is None:
        `load` or a refresh with a connection replaces them with the database's."""
        catalog = cls(settings)
        catalog._use(rows)
        return catalog

    def _use(self, rows: Iterable[PermitRow]) -> None:
        """Index `rows` and make them the catalogue's permits."""
        permits = {row.id: self._permit(row) for row in rows}
        by_truck: dict[int, list[Permit]] = {}
        for permit in permits.values():
            for truck_id in permit.truck_ids:
                by_truck.setdefault(truck_id, []).append(permit)
        self.permits = permits
        self.lookup = PermitLookup(list(permits.values()), self.clock)
        self.by_number = {p.number: p for p in permits.values()}
        self.by_truck = {
            tid: tuple(sorted(ps, key=lambda p: (p.valid_from, p.id), reverse=True))
            for tid, ps in by_truck.items()
        }

    def refresh_if_changed(self, conn) -> bool:
        """Reload when the permit version differs from the loaded one; True if reloaded."""
        self._last_poll = time.monotonic()
        version = current_version(conn)
        if not conn.autocommit:
            conn.commit()
        if version == self.version:
            return False
        self.load(conn)
        return True

    def maybe_refresh(self, conn) -> bool:
        """`refresh_if_changed`, at most once per compliance.permits_reload_poll_s."""
        if time.monotonic() - self._last_poll < self.poll_interval_s:
            return False
        return self.refresh_if_changed(conn)

    def permits_for(self, truck_id: int, at_epoch_s: float) -> list[Permit]:
        """The truck's permits that are active and valid at that instant (newest first)."""
        return [p for p in self.by_truck.get(truck_id, ()) if p.valid_at(at_epoch_s)]

    def permit(self, number: str) -> Permit | None:
        return self.by_number.get(number)

    def has_permit_at(self, truck_ids: Any, epoch_s: Any) -> np.ndarray:
        """Vectorised: True where the truck has at least one valid, active permit then."""
        trucks = np.asarray(truck_ids, dtype=np.int64).reshape(-1)
        t = np.asarray(epoch_s, dtype=np.float64).reshape(-1)
        return self.lookup.valid_positions(trucks, t) >= 0
