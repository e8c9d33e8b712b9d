"""Compliance inside a collector process: the rules on every stored batch, plus the jobs
that run on the clock (catalogue reloads, the going-dark sweep, and the extra jobs the
composition root passes in, such as black-truck matching).

    rules = RulesService(settings, jobs=[("name", fn, interval_s)]); rules.start()
    collector = Collector(settings, after_store=rules.hooks)

The rules run in the collector's transaction (telemetry stays unaware of compliance: it only
calls the hooks it is given). Clock jobs run one at a time on a connection of their own.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg2
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from compliance.engine import ComplianceEngine
from compliance.sweep import sweep_dark, sweep_jumps
from core.db import connect_settings

log = logging.getLogger(__name__)

# A clock job: its name (in log lines), what it does with the jobs' connection, and how
# often it runs (seconds).
Job = tuple[str, Callable[[Any], Any], float]


class RulesService:
    def __init__(
        self, settings: Any, *, engine: ComplianceEngine | None = None, jobs: Sequence[Job] = ()
    ) -> None:
        """`engine`: the rules (default: a new ComplianceEngine), given when a job shares its
        catalogues; `jobs`: clock jobs run besides the catalogue reload and the sweep."""
        self.settings = settings
        self.engine = engine or ComplianceEngine(settings)
        self.jobs = list(jobs)
        self._conn = None
        self._scheduler: BackgroundScheduler | None = None

    @property
    def hooks(self) -> list:
        return [self.engine.after_store]

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = connect_settings(self.settings, application_name="muck-rules")
        return self._conn

    def _job(self, name: str, fn) -> None:
        try:
            fn(self._connection())
        except Exception as exc:  # noqa: BLE001 - a clock job must never stop ingestion
            log.warning("%s failed: %s", name, exc)
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:  # noqa: BLE001
                    pass
                self._conn = None

    def start(self) -> None:
        # The rules must not run on empty catalogues (every loaded truck would look
        # unpermitted), and nothing can be stored without the database anyway: wait for it.
        delay = 1.0
        while True:
            try:
                self.engine.load(self._connection())
                break
            except psycopg2.OperationalError as exc:
                log.warning("cannot load zones and permits (%s); retrying in %.0fs", exc, delay)
                self._conn = None
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        cfg = self.settings["compliance"]
        scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        scheduler.add_job(
            self._job,
            "interval",
            seconds=float(cfg["permits_reload_poll_s"]),
            args=("catalogue reload", self.engine.refresh),
        )
        scheduler.add_job(
            self._job,
            "interval",
            seconds=float(cfg["dark_sweep_s"]),
            args=("going-dark sweep", self.sweep),
        )
        for name, fn, interval_s in self.jobs:
            scheduler.add_job(self._job, "interval", seconds=float(interval_s), args=(name, fn))
        scheduler.start()
        self._scheduler = scheduler

    def capture_evidence(self, conn) -> None:
        while self.engine.writer.capture_due(conn) == 200:
            pass  # a burst: keep going until caught up

    def sweep(self, conn) -> list[int]:
        opened = sweep_dark(conn, self.settings, dt.datetime.now(dt.UTC))
        return opened + sweep_jumps(conn, self.settings)

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
