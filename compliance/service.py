"""Compliance inside a collector process: the rules on every stored batch, and the clock jobs
that belong to them (catalogue reloads, the going-dark and jump sweeps, the district and place fills).

    rules = RulesService(settings); rules.start()
    collector = Collector(settings, after_store=rules.hooks)
    runner = JobRunner(settings, rules.jobs())  # with the other packages' jobs: muck/jobs.py

The rules run in the collector's transaction (telemetry stays unaware of compliance: it only
calls the hooks it is given). The jobs are run by the composition root's JobRunner.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import psycopg2

from compliance.districts import fill_missing_districts
from compliance.engine import ComplianceEngine
from compliance.places import fill_missing_places
from compliance.sweep import sweep_dark, sweep_jumps
from core.db import connect_settings
from core.scheduling import Job

log = logging.getLogger(__name__)


class RulesService:
    def __init__(self, settings: Any, *, engine: ComplianceEngine | None = None) -> None:
        """`engine`: the rules (default: a new ComplianceEngine), given when another package's
        job shares its catalogues."""
        self.settings = settings
        self.engine = engine or ComplianceEngine(settings)

    @property
    def hooks(self) -> list:
        return [self.engine.after_store]

    def start(self) -> None:
        """Load the catalogues, waiting for the database: the rules must not run on empty
        catalogues (every loaded truck would look unpermitted), and nothing can be stored
        without the database anyway."""
        delay = 1.0
        while True:
            try:
                conn = connect_settings(self.settings, application_name="muck-rules-load")
                try:
                    self.engine.load(conn)
                finally:
                    conn.close()
                return
            except psycopg2.OperationalError as exc:
                log.warning("cannot load zones and permits (%s); retrying in %.0fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 30.0)

    def jobs(self) -> list[Job]:
        cfg = self.settings["compliance"]
        return [
            Job("catalogue reload", self.engine.refresh, float(cfg["permits_reload_poll_s"])),
            Job("going-dark sweep", self.sweep, float(cfg["dark_sweep_s"])),
            Job("district fill", fill_missing_districts, float(cfg["district_fill_s"])),
            Job("violation place fill", fill_missing_places, float(cfg["place_fill_s"])),
        ]

    def sweep(self, conn) -> list[int]:
        from compliance.violations import VIOLATIONS_RAISED

        now = dt.datetime.now(dt.UTC)
        # Wall clock: a truck whose newest fix was received within the dark threshold is
        # still sending (a back-fill): not judged now.
        heard = now - dt.timedelta(seconds=float(self.settings.thresholds["dark_after_s"]))
        opened = sweep_dark(conn, self.settings, now, heard_before=heard)
        VIOLATIONS_RAISED.labels("going_dark").inc(len(opened))
        return opened + sweep_jumps(conn, self.settings)
