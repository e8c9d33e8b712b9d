"""Daily partitions of `positions` when TimescaleDB is absent: create ahead, drop past retention.

With TimescaleDB, chunks and retention are the extension's job and these functions only report.
Partitions are UTC days named positions_pYYYYMMDD.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass, field

from psycopg2 import sql

from core.config import Settings
from core.db import has_timescaledb
from core.scheduling import Job

log = logging.getLogger(__name__)

_PARTITION = re.compile(r"^positions_p(\d{8})$")


@dataclass
class MaintenanceReport:
    timescaledb: bool
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.timescaledb:
            return "positions: TimescaleDB hypertable (chunks, compression and retention by policy)"
        return (
            f"positions: native daily partitions; created {len(self.created)}, "
            f"dropped {len(self.dropped)}"
        )


def partition_name(day: dt.date) -> str:
    return f"positions_p{day:%Y%m%d}"


def existing_partitions(cur) -> dict[dt.date, str]:
    cur.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = 'positions'"""
    )
    days = {}
    for (name,) in cur.fetchall():
        match = _PARTITION.match(name)
        if match:
            days[dt.datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return days


def ensure_days(cur, days: set[dt.date], known: set[dt.date] | None = None) -> list[str]:
    """Create the partitions for `days` that do not exist yet (concurrency-safe)."""
    created = []
    existing = known if known is not None else set(existing_partitions(cur))
    for day in sorted(days - existing):
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        end = start + dt.timedelta(days=1)
        name = partition_name(day)
        cur.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} PARTITION OF positions FOR VALUES FROM (%s) TO (%s)"
            ).format(sql.Identifier(name)),
            (start, end),
        )
        created.append(name)
        if known is not None:
            known.add(day)
    return created


def maintain(conn, settings: Settings, today: dt.date | None = None) -> MaintenanceReport:
    """Create partitions from the ingest horizon to `partitions_ahead_days` ahead; drop expired."""
    if has_timescaledb(conn):
        return MaintenanceReport(timescaledb=True)
    today = today or dt.datetime.now(dt.UTC).date()
    storage, ingest = settings.storage, settings.ingest
    first = today - dt.timedelta(days=int(ingest["past_horizon_days"]) + 1)
    last = today + dt.timedelta(days=int(storage["partitions_ahead_days"]))
    wanted = {first + dt.timedelta(days=i) for i in range((last - first).days + 1)}
    report = MaintenanceReport(timescaledb=False)
    cutoff = today - dt.timedelta(days=int(storage["retention_days"]))
    with conn.cursor() as cur:
        # Serialise with collectors creating partitions for late fixes.
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (0x706F73,))
        existing = existing_partitions(cur)
        report.created = ensure_days(cur, wanted, set(existing))
        for day, name in sorted(existing.items()):
            if day < cutoff:
                cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                report.dropped.append(name)
    conn.commit()
    return report


def maintenance_job(settings: Settings) -> Job:
    """Hourly, and at once when a process starts (one started after midnight creates today's
    partitions before its first batch)."""

    def run(conn) -> None:
        log.info(maintain(conn, settings).describe())

    return Job("partition maintenance", run, 3600.0, at_start=True)
