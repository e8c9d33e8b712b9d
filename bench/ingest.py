"""`muck bench ingest`: the end-to-end ingestion benchmark.

Publishers and collectors run as separate processes (one Python process cannot publish
fast enough, and the GIL would make an in-process collector measure the publisher too).
The run uses its own topic prefix and device ids, and deletes its rows afterwards.

Latency is publish → batch write: each fix carries its publish time as `ts`, and the
collector stamps `received_at` when it writes the batch (commit follows within a few ms).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from core.config import Settings
from core.db import connect_settings
from simulators.loadgen import (
    PublisherGroup,
    broker_ceiling,
    plans_for,
    register_devices,
    unregister_company,
)


@dataclass
class BenchReport:
    messages: int
    publishers: int
    collectors: int
    qos: int
    publish_seconds: float = 0.0
    stored: int = 0
    store_seconds: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ceiling_rate: float | None = None
    registered: bool = False
    rules: bool = True
    alert_latency_ms: dict[str, float] = field(default_factory=dict)
    collector_duplicates: int = 0
    cpu: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        lost = self.messages - self.stored
        lines = [
            f"messages published: {self.messages} from {self.publishers} publisher process(es), "
            f"QoS {self.qos}, {self.collectors} collector process(es), "
            f"devices {'registered' if self.registered else 'unregistered'}, "
            f"rules {'on' if self.rules else 'off'}",
            f"publish rate:       {self.messages / self.publish_seconds:,.0f} msg/s"
            if self.publish_seconds
            else "publish rate: n/a",
            f"stored rate:        {self.stored / self.store_seconds:,.0f} msg/s end to end "
            f"({self.stored} stored in {self.store_seconds:.1f}s)",
            f"lost:               {lost}",
            f"duplicates:         0 stored (primary key); {self.collector_duplicates} redelivered "
            "and discarded",
            "latency publish→write: "
            + ", ".join(f"{k} {v:.0f} ms" for k, v in self.latency_ms.items()),
        ]
        if self.alert_latency_ms:
            lines.append(
                "alerts (publish of the fix that made a violation certain → violation row): "
                + ", ".join(f"{k} {v:.0f}" for k, v in self.alert_latency_ms.items())
            )
        if self.ceiling_rate is not None:
            lines.append(
                f"broker ceiling:     {self.ceiling_rate:,.0f} msg/s to a subscriber that does nothing"
            )
        if self.cpu:
            lines.append(
                "CPU seconds (stored phase): "
                + ", ".join(f"{k} {v:.1f}" for k, v in self.cpu.items())
                + f"; {sum(self.cpu.values()) / max(self.store_seconds, 1e-9):.2f} cores busy, "
                + f"{sum(self.cpu.values()) / max(self.stored, 1) * 1e6:.0f} µs CPU per message"
            )
        return "\n".join(lines)


def _service_cpu() -> dict[str, float]:
    """CPU seconds used so far by the broker and the database server on this machine."""
    totals = {"mosquitto": 0.0, "postgres": 0.0}
    for proc in psutil.process_iter(["name", "cpu_times"]):
        name, times = proc.info["name"], proc.info["cpu_times"]
        if times is None:
            continue
        if name == "mosquitto":
            totals["mosquitto"] += times.user + times.system
        elif name and (name.startswith("postgres") or name.startswith("postmaster")):
            totals["postgres"] += times.user + times.system
    return totals


def run_ingest_bench(
    settings: Settings,
    *,
    messages: int,
    devices: int,
    publishers: int,
    collectors: int,
    rate: float,
    qos: int,
    measure_ceiling: bool = True,
    registered: bool = False,
    rules: bool = True,
    measure=None,
    load_stagger_s: float = 0.0,
) -> BenchReport:
    """`measure(conn, run)`, when given, runs after the figures and before the run's rows
    are deleted (bench/alerts.py reads its violations there)."""
    url = settings.mqtt_endpoint().url()
    report = BenchReport(messages, publishers, collectors, qos)
    if measure_ceiling:
        report.ceiling_rate = broker_ceiling(url, messages, publishers, qos)

    run = uuid.uuid4().hex[:6]
    prefix = f"bench-{run}/v1"
    device_ids = [f"B{run}{i:05d}" for i in range(devices)]
    config = Path(tempfile.mkdtemp(prefix="muck-bench-")) / "bench.toml"
    config.write_text(
        f'[mqtt]\ntopic_prefix = "{prefix}"\nshared_group = "{"b" + run if collectors > 1 else ""}"\n'
    )
    env = {**os.environ, "MUCK_CONFIG": str(config)}
    muck = str(Path(sys.executable).with_name("muck"))
    conn = connect_settings(settings, application_name="muck-bench")
    if registered:
        register_devices(conn, f"bench {run}", f"BENCH{run}", device_ids)
    flags = ["--no-maintenance"] + ([] if rules else ["--no-rules"])
    procs = [
        subprocess.Popen(
            [muck, "collect", "--client-id", f"bench-{run}-{i}", *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(collectors)
    ]
    try:
        time.sleep(2.0)  # collectors connect and subscribe
        services_before = _service_cpu()
        if qos != 1:
            raise ValueError("the benchmark publishes at QoS 1 (what terminals use)")
        start_at = time.time() + 2.0
        pubs = PublisherGroup(
            plans_for(
                url,
                prefix,
                device_ids,
                publishers,
                rate=rate,
                count=messages,
                start_at=start_at,
                load_stagger_s=load_stagger_s,
            )
        ).start()
        stored, last_change, last_count = 0, time.monotonic(), -1
        while True:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM positions WHERE device_id LIKE %s", (f"B{run}%",))
                stored = cur.fetchone()[0]
            conn.commit()
            if stored != last_count:
                last_count, last_change = stored, time.monotonic()
                finished_at = time.time()
            if stored >= messages or time.monotonic() - last_change > 30:
                break
            time.sleep(0.25)
        results = [r for r in pubs.join() if r.error is None]
        report.publish_seconds = max((r.seconds for r in results), default=0.0)
        pub_cpu = sum(r.cpu_s for r in results)
        report.stored = stored
        report.store_seconds = finished_at - start_at
        with conn.cursor() as cur:
            cur.execute(
                """SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (
                           ORDER BY extract(epoch FROM received_at - fix_time) * 1000),
                          max(extract(epoch FROM received_at - fix_time) * 1000)
                   FROM positions WHERE device_id LIKE %s""",
                (f"B{run}%",),
            )
            (p50, p95, p99), worst = cur.fetchone()
        report.latency_ms = {"p50": p50, "p95": p95, "p99": p99, "max": float(worst)}
        if registered and rules:
            report.alert_latency_ms = _alert_latency(conn, run)
        if measure is not None:
            measure(conn, run)
        collector_cpu = 0.0
        for proc in procs:
            try:
                times = psutil.Process(proc.pid).cpu_times()
                collector_cpu += times.user + times.system
            except psutil.Error:
                pass
        services_after = _service_cpu()
        report.cpu = {"publishers": pub_cpu, "collectors": collector_cpu}
        for name, seconds in services_after.items():
            report.cpu[name] = seconds - services_before.get(name, 0.0)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                continue
            for token in err.split():
                if token.startswith("duplicates="):
                    report.collector_duplicates += int(token.split("=")[1])
                    break
        # The run's own fixes (its device ids) go: telemetry has no function to delete
        # positions other than dropping whole partitions past retention.
        with conn.cursor() as cur:
            cur.execute("DELETE FROM positions WHERE device_id LIKE %s", (f"B{run}%",))
        conn.commit()
        if registered:
            unregister_company(conn, f"bench {run}")
        conn.close()
    report.registered, report.rules = registered, rules
    return report


# Each violation of a run's trucks with the fix that first satisfied its rule's minimum
# duration — the fix that made it certain (its `ts` is its publish time). bench/alerts.py
# uses it too.
COMPLETING_FIX = """
SELECT v.id, v.detected_at, q.fix_time
FROM violations v JOIN trucks t ON t.id = v.truck_id
JOIN companies c ON c.id = t.company_id AND c.name = %s
CROSS JOIN LATERAL (
    SELECT min(p.fix_time) AS fix_time FROM positions p
    WHERE p.truck_id = v.truck_id
      AND p.fix_time >= v.started_at
          + make_interval(secs => (v.rule_params ->> 'min_duration_s')::float8)
) q
WHERE q.fix_time IS NOT NULL
"""


def _alert_latency(conn, run: str) -> dict[str, float]:
    """For each violation of the bench's trucks: the fix that first satisfied the rule's
    minimum duration was published at its `ts`; the violation row was written at
    `detected_at` (its transaction's start, a few ms before commit)."""
    with conn.cursor() as cur:
        cur.execute(
            f"""SELECT count(*),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY ms),
                       percentile_cont(0.99) WITHIN GROUP (ORDER BY ms), max(ms)
                FROM (SELECT extract(epoch FROM detected_at - fix_time) * 1000 AS ms
                      FROM ({COMPLETING_FIX}) f) x""",  # noqa: S608 - a constant
            (f"bench {run}",),
        )
        n, p50, p99, worst = cur.fetchone()
    conn.commit()
    if not n:
        return {}
    return {"violations": float(n), "p50 ms": p50, "p99 ms": p99, "max ms": float(worst)}
