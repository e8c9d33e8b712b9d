"""Collector counters as Prometheus metrics, plus a plain snapshot for `muck collect --stats`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestStats:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.received = Counter(
            "muck_ingest_messages_received", "MQTT messages received", registry=r
        )
        self.fixes_stored = Counter(
            "muck_ingest_fixes_stored", "Fixes inserted into positions", registry=r
        )
        self.duplicates = Counter(
            "muck_ingest_duplicates", "Fixes already stored with identical content", registry=r
        )
        self.quarantined = Counter(
            "muck_ingest_quarantined",
            "Rejected messages or fixes, by reason",
            ["reason"],
            registry=r,
        )
        self.sightings = Counter(
            "muck_ingest_sightings_stored", "Camera sightings stored", registry=r
        )
        self.batches = Counter("muck_ingest_batches", "Committed batches", registry=r)
        self.db_errors = Counter(
            "muck_ingest_db_errors", "Failed batch writes (retried)", registry=r
        )
        self.hook_errors = Counter(
            "muck_ingest_hook_errors",
            "Batches stored without their after-store hooks (the rules) after a fault",
            registry=r,
        )
        self.batch_seconds = Histogram(
            "muck_ingest_batch_seconds",
            "Time to decode and commit one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )

        # "Broker lag" as the collector can see it: how old the newest fix of the last
        # committed batch was (collector clock minus device time). Live traffic keeps it at a
        # few seconds; a collector falling behind its broker queue shows it rising. (Mosquitto
        # does not report one client's queue length; EMQX does, per client, in its API.)
        self.lag_seconds = Gauge(
            "muck_ingest_lag_seconds",
            "Age of the newest fix in the last committed batch (collector clock - device time)",
            registry=r,
        )
        self.unacked = Gauge(
            "muck_ingest_unacknowledged_messages",
            "Messages received and not yet committed and acknowledged (the in-flight window)",
            registry=r,
        )
        self.trucks_online = Gauge(
            "muck_trucks_online",
            "Trucks whose latest fix was received within metrics.online_window_s",
            registry=r,
        )

    def snapshot(self) -> dict[str, float | dict[str, float]]:
        reasons = {}
        for metric in self.quarantined.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    reasons[sample.labels["reason"]] = sample.value
        return {
            "received": self.received._value.get(),
            "stored": self.fixes_stored._value.get(),
            "duplicates": self.duplicates._value.get(),
            "quarantined": reasons,
            "sightings": self.sightings._value.get(),
            "batches": self.batches._value.get(),
            "db_errors": self.db_errors._value.get(),
            "hook_errors": self.hook_errors._value.get(),
        }

    def describe(self) -> str:
        s = self.snapshot()
        quarantined = s["quarantined"]
        total_q = sum(quarantined.values()) if isinstance(quarantined, dict) else 0
        by_reason = ", ".join(f"{k}={int(v)}" for k, v in sorted(quarantined.items())) or "none"
        return (
            f"received={int(s['received'])} stored={int(s['stored'])} "
            f"duplicates={int(s['duplicates'])} quarantined={int(total_q)} ({by_reason}) "
            f"sightings={int(s['sightings'])} batches={int(s['batches'])} "
            f"db_errors={int(s['db_errors'])} hook_errors={int(s['hook_errors'])}"
        )


def fleet_gauges_job(settings, stats: IngestStats):
    """The clock job that keeps `muck_trucks_online` current (one indexed count)."""
    from core.scheduling import Job

    window_s = float(settings["metrics"]["online_window_s"])

    def refresh(conn) -> None:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM truck_state WHERE received_at > now() - %s * interval '1 s'",
                (window_s,),
            )
            stats.trucks_online.set(cur.fetchone()[0])
        conn.rollback()

    return Job("fleet gauges", refresh, float(settings["metrics"]["refresh_s"]), at_start=True)
