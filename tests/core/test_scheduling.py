"""The JobRunner that runs every package's clock jobs: at start when asked, never paused,
a failure counted and retried on a fresh connection, never raised."""

from __future__ import annotations

import time

from core.scheduling import Job, JobRunner
from muck.jobs import collector_jobs, rules_service


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_jobs_run_at_start_or_after_their_interval_and_failures_are_retried(settings):
    seen: list[str] = []
    backends: list[int] = []

    def flaky(conn):
        with conn.cursor() as cur:
            cur.execute("SELECT pg_backend_pid()")
            backends.append(cur.fetchone()[0])
        conn.rollback()
        if len(backends) == 1:
            raise RuntimeError("first run fails")

    runner = JobRunner(
        settings,
        [
            Job("at start", lambda conn: seen.append("start"), 3600, at_start=True),
            Job("later", lambda conn: seen.append("later"), 0.2),
            Job("flaky", flaky, 0.2),
        ],
    )
    runner.start()
    try:
        assert wait_for(lambda: "start" in seen and "later" in seen and len(backends) >= 2)
        assert runner.scheduled() == {"at start": 3600.0, "later": 0.2, "flaky": 0.2}
    finally:
        runner.stop()
    assert seen.count("start") == 1
    stats = runner.stats["flaky"]
    assert stats.failures == 1 and stats.last_error == "first run fails"
    assert backends[0] != backends[1], "a failed job's connection is replaced"


def test_a_collector_runs_maintenance_the_rules_jobs_the_scan_and_the_evidence_capture(
    settings,
):
    names = [job.name for job in collector_jobs(settings, rules_service(settings))]
    assert names == [
        "partition maintenance",
        "catalogue reload",
        "going-dark sweep",
        "district fill",
        "violation place fill",
        "black-truck scan",
        "evidence capture",
        "credit listing",
    ]
    (maintenance,) = collector_jobs(settings, None)
    assert maintenance.at_start and maintenance.every_s == 3600
    assert collector_jobs(settings, None, maintenance=False) == []
