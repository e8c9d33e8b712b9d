"""Everything a collector process runs on the clock, in one list.

Each package declares its jobs (`telemetry.partitions`, `compliance.service.RulesService`,
`black_trucks.scan`, `evidence.capture`, `credit.lists`); this is where they meet, for `muck collect` and
`muck demo` alike.
tests/muck/test_collect_jobs.py starts the real `muck collect` and sees each job's effect in
the database.
"""

from __future__ import annotations

from compliance.service import RulesService
from core.config import Settings
from core.scheduling import Job
from telemetry.stats import IngestStats


def rules_service(settings: Settings) -> RulesService:
    """The compliance rules; `start()` it before the collector stores anything."""
    return RulesService(settings)


def collector_jobs(
    settings: Settings,
    rules: RulesService | None,
    *,
    maintenance: bool = True,
    stats: IngestStats | None = None,
) -> list[Job]:
    """The jobs of a collector process: partition maintenance (unless another process does
    it), and with the rules their own jobs plus the black-truck scan, which reuses the rules'
    zone catalogue (building one takes seconds), and the evidence capture; with `stats` (a
    process serving /metrics) the fleet gauges."""
    from black_trucks.scan import ScanJob
    from evidence.capture import capture_job
    from telemetry.partitions import maintenance_job
    from telemetry.stats import fleet_gauges_job

    jobs = [maintenance_job(settings)] if maintenance else []
    if stats is not None:
        jobs.append(fleet_gauges_job(settings, stats))
    if rules is not None:
        jobs += rules.jobs()
        jobs.append(
            Job(
                "black-truck scan",
                ScanJob(settings, rules.engine.zones),
                float(settings["compliance"]["black_truck_scan_s"]),
            )
        )
        jobs.append(capture_job(settings))
        jobs += credit_jobs(settings)
    return jobs


def credit_jobs(settings: Settings) -> list[Job]:
    """Credit's jobs: the listing evaluation and expiry, and the nightly export when a folder
    is configured (credit/lists.py, credit/exports.py)."""
    from credit.exports import nightly_job
    from credit.lists import listing_job

    jobs = [listing_job(settings)]
    if settings["credit"]["nightly_export_dir"]:
        jobs.append(nightly_job(settings))
    return jobs
