"""Clock jobs: each package declares what it runs on the clock; the composition root runs them.

A package offers `Job`s (partition maintenance in telemetry, the going-dark sweep in
compliance, the black-truck scan, …) and never starts a scheduler of its own; `muck collect`
and `muck demo` hand every job of the process to one `JobRunner`. That keeps the list of what
runs in a process in one place (muck/jobs.py) and gives every job the same treatment: its own
database connection, reopened after a failure, a failure logged and retried at the next run
but never allowed to stop ingestion, and counters an operator can read.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from core.db import connect_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """`run(conn)` every `every_s` seconds; at once when the runner starts if `at_start`."""

    name: str
    run: Callable[[Any], Any]
    every_s: float
    at_start: bool = False


@dataclass
class JobStats:
    runs: int = 0
    failures: int = 0
    last_error: str | None = None
    last_finished: dt.datetime | None = None


class JobRunner:
    """Runs jobs on a small thread pool; one job never runs twice at once, and a run that
    comes due while the previous one is still going is skipped (coalesced), not queued."""

    def __init__(self, settings: Any, jobs: Sequence[Job], *, threads: int = 2) -> None:
        names = [job.name for job in jobs]
        if len(set(names)) != len(names):
            raise ValueError(f"job names must be unique: {names}")
        self.settings = settings
        self.jobs = list(jobs)
        self.stats = {job.name: JobStats() for job in jobs}
        self._threads = threads
        self._connections: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._scheduler: BackgroundScheduler | None = None

    def _connection(self, name: str):
        conn = self._connections.get(name)
        if conn is None or conn.closed:
            conn = connect_settings(self.settings, application_name=f"muck-job-{name}"[:63])
            self._connections[name] = conn
        return conn

    def run_once(self, job: Job) -> bool:
        """Run `job` now on its connection; False (logged, counted) if it failed."""
        stats = self.stats[job.name]
        try:
            job.run(self._connection(job.name))
        except Exception as exc:  # noqa: BLE001 - a clock job must never stop ingestion
            log.warning("%s failed: %s", job.name, exc)
            with self._lock:
                stats.failures += 1
                stats.last_error = str(exc)[:500]
            conn = self._connections.pop(job.name, None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - it is being thrown away
                    pass
            return False
        finally:
            with self._lock:
                stats.runs += 1
                stats.last_finished = dt.datetime.now(dt.UTC)
        return True

    def start(self) -> None:
        scheduler = BackgroundScheduler(
            timezone="UTC",
            executors={"default": ThreadPoolExecutor(self._threads)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        now = dt.datetime.now(dt.UTC)
        for job in self.jobs:
            # next_run_time=None would add the job paused: leave it out for the default (one
            # interval from now).
            first = {"next_run_time": now} if job.at_start else {}
            scheduler.add_job(
                self.run_once,
                "interval",
                seconds=float(job.every_s),
                args=(job,),
                id=job.name,
                **first,
            )
        scheduler.start()
        self._scheduler = scheduler

    def scheduled(self) -> dict[str, float]:
        """Job name → interval in seconds, as scheduled (empty before `start`)."""
        if self._scheduler is None:
            return {}
        return {j.id: j.trigger.interval.total_seconds() for j in self._scheduler.get_jobs()}

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Serve the jobs' counters: `muck_job_runs_total{job}`, `muck_job_failures_total{job}`
        and `muck_job_last_finished_timestamp_seconds{job}` (read at scrape time)."""
        registry.register(_JobMetrics(self))

    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        for conn in self._connections.values():
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - shutting down
                pass
        self._connections.clear()


class _JobMetrics:
    """A Prometheus collector over a runner's JobStats (no second set of counters to keep)."""

    def __init__(self, runner: JobRunner) -> None:
        self.runner = runner

    def collect(self):
        runs = CounterMetricFamily("muck_job_runs", "Clock job runs, by job", labels=["job"])
        failures = CounterMetricFamily(
            "muck_job_failures", "Clock job runs that failed, by job", labels=["job"]
        )
        last = GaugeMetricFamily(
            "muck_job_last_finished_timestamp_seconds",
            "When each clock job last finished (Unix time)",
            labels=["job"],
        )
        with self.runner._lock:
            stats = {
                name: (s.runs, s.failures, s.last_finished) for name, s in self.runner.stats.items()
            }
        for name, (n, failed, finished) in stats.items():
            runs.add_metric([name], n)
            failures.add_metric([name], failed)
            if finished is not None:
                last.add_metric([name], finished.timestamp())
        return [runs, failures, last]
