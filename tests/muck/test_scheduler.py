"""`muck scheduler`: the clock jobs of the platform in one process beside `--no-jobs`
collectors (docker-compose.yml), started for real and seen by their effects."""

from __future__ import annotations

from psycopg2 import sql

from tests.mqtt_helpers import collector_env, wait_until
from tests.muck.test_collect_jobs import furthest_partition
from tests.muck.test_metrics import healthz, scrape, value
from tests.services import MuckProcess, free_port

FAST = """
[metrics]
refresh_s = 0.5
"""


def test_the_scheduler_runs_the_jobs_and_reports_them(settings, broker, db):
    partition = furthest_partition(db)
    with db.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(partition)))
    db.commit()
    port = free_port()
    env = collector_env(settings, broker.url, FAST)
    with MuckProcess(["scheduler", "--metrics-port", str(port)], env, ready="scheduler ready") as p:
        # Partition maintenance runs at start: the dropped partition is back.
        assert wait_until(lambda: furthest_partition(db) == partition, timeout=20), p.output()
        assert wait_until(
            lambda: value(scrape(port), "muck_job_runs_total", job="fleet gauges") >= 2, timeout=10
        )
        samples = scrape(port)
        assert value(samples, "muck_job_runs_total", job="partition maintenance") >= 1
        assert value(samples, "muck_job_failures_total", job="partition maintenance") == 0
        status, body = healthz(port)
        assert status == 200 and body["database"] == "ok", body
        assert p.stop() == 0, p.output()
    assert any("job partition maintenance: 1 runs" in line for line in p.log), p.output()


def test_a_collector_with_no_jobs_runs_none(settings, broker, db):
    port = free_port()
    env = collector_env(settings, broker.url, FAST)
    args = ["collect", "--client-id", "nojobs", "--no-jobs", "--metrics-port", str(port)]
    with MuckProcess(args, env, ready="subscribed to"):
        samples = scrape(port)
        assert not [k for k in samples if k[0] == "muck_job_runs_total"]
        assert value(samples, "muck_ingest_messages_received_total") == 0
