"""`muck bench rules`: what the compliance rules add to the cost of ingesting a batch.

Two workloads, each through the real ingestion path (validation, COPY, truck_state) in
batches of `ingest.batch_size`, once without the rules and once with them, in scratch
databases next to MUCK_DATABASE_URL's (dropped afterwards). MQTT is left out: it costs the
same either way and is measured by `muck bench ingest`.

* `random` (the stress case): the geofence benchmark's synthetic city (polygons of 50-500
  vertices plus route corridors of 1,000 vertices), registered trucks with permits tying
  them to sites, disposal sites and routes, one fix per truck per round, trucks driving
  straight across the city, half of them loaded — so every loaded truck is off its route
  and about one fix in ten opens or closes a violation.
* `city` (the realistic case): the simulator's city and fleet (`simulators/`), trucks
  loading at sites, driving approved routes, unloading at disposal sites, with the
  simulator's default misbehaviour rates, GPS noise, dropped, duplicated and re-uploaded
  messages. The same messages go through both paths (two scratch databases).

Besides wall time the benchmark reports CPU: this process's and the PostgreSQL backend's,
read from /proc, which a machine busy with other work inflates less than wall time.
"""

from __future__ import annotations

import datetime as dt
import gc
import json
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

import msgspec
import numpy as np

from bench.geofence import synthetic_zones
from compliance.engine import ComplianceEngine
from core.config import Settings
from core.db import connect, create_database, drop_database
from core.migrate import migrate
from geofence.store import upsert_zones
from permits.io import parse_permits_json
from permits.store import import_permits
from registry.service import bind_terminal, upsert_company, upsert_truck
from telemetry.contract import Topics
from telemetry.ingest import Incoming, Ingestor
from telemetry.partitions import maintain


def _scratch(url: str) -> tuple[str, str]:
    return create_database(url, "muck_bench_rules_")


def _setup(conn, settings: Settings, trucks: int, polygons: int, routes: int) -> list[str]:
    zones = synthetic_zones(dict(settings.city), n_polygons=polygons, n_routes=routes)
    upsert_zones(conn, zones)
    codes = {
        kind: [z.code for z in zones if z.kind == kind] for kind in ("site", "disposal", "route")
    }
    bound_from = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    devices = []
    with conn.cursor() as cur:
        company = upsert_company(cur, "基准运输公司", "91110000600037341L")
        for t in range(1, trucks + 1):
            truck_id = upsert_truck(cur, f"粤B{t:05d}", company)
            devices.append(f"RB{truck_id:06d}")
            bind_terminal(cur, devices[-1], truck_id, bound_from)
    conn.commit()
    rng = random.Random(7)
    permits = [
        {
            "number": f"BENCH-{p:05d}",
            "company_credit_code": "91110000600037341L",
            "trucks": [f"粤B{t:05d}" for t in range(p * 50 + 1, min(trucks, p * 50 + 50) + 1)],
            "origin_site": rng.choice(codes["site"]),
            "disposal_sites": rng.sample(codes["disposal"], 2),
            "routes": [rng.choice(codes["route"])],
            "valid_from": "2020-01-01",
            "valid_to": "2099-12-31",
        }
        for p in range((trucks + 49) // 50)
    ]
    import_permits(conn, parse_permits_json(json.dumps(permits, ensure_ascii=False)))
    conn.commit()
    return devices


def _batches(devices: list[str], rounds: int, start_ms: int, center: tuple[float, float]):
    topics = Topics()
    rng = np.random.default_rng(3)
    n = len(devices)
    lon = center[0] + rng.uniform(-0.15, 0.15, n)
    lat = center[1] + rng.uniform(-0.15, 0.15, n)
    heading = rng.uniform(0, 2 * np.pi, n)
    loaded = rng.random(n) < 0.5
    out = []
    for r in range(rounds):
        lon = lon + np.sin(heading) * 1e-3
        lat = lat + np.cos(heading) * 1e-3
        ts = start_ms + r * 10_000
        out.append(
            [
                Incoming(
                    topics.telemetry(d),
                    msgspec.json.encode(
                        {
                            "ts": ts,
                            "lat": float(lat[i]),
                            "lon": float(lon[i]),
                            "speed": 38.0,
                            "heading": 90,
                            "lid": "closed",
                            "lift": "down",
                            "load": "full" if loaded[i] else "empty",
                            "acc": True,
                            "seq": r,
                        }
                    ),
                )
                for i, d in enumerate(devices)
            ]
        )
    return out


@dataclass
class Cost:
    fixes: int
    wall_s: float
    client_s: float  # CPU of this process
    backend_s: float  # CPU of the PostgreSQL backend serving the connection

    def us(self, seconds: float) -> float:
        return seconds / max(self.fixes, 1) * 1e6

    def line(self, label: str) -> str:
        cpu = self.client_s + self.backend_s
        return (
            f"{label}: {self.fixes} fixes, {self.us(self.wall_s):.1f} µs/fix wall "
            f"({self.fixes / self.wall_s:,.0f} fixes/s); CPU {self.us(cpu):.1f} µs/fix "
            f"(client {self.us(self.client_s):.1f}, PostgreSQL {self.us(self.backend_s):.1f})"
        )


def _backend_cpu_s(conn) -> float:
    """CPU seconds used so far by the PostgreSQL backend of `conn` (0 when not local)."""
    try:
        with open(f"/proc/{conn.get_backend_pid()}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _feed(conn, ingestor: Ingestor, writer, batches, batch_size: int) -> Cost:
    fixes = 0
    backend0, client0 = _backend_cpu_s(conn), time.process_time()
    started = time.perf_counter()
    for round_ in batches:
        for i in range(0, len(round_), batch_size):
            part = round_[i : i + batch_size]
            with conn.cursor() as cur:
                batch = ingestor.build(part, cur)
            writer.write(batch)
            fixes += len(batch.inserted)
    wall = time.perf_counter() - started
    return Cost(fixes, wall, time.process_time() - client0, _backend_cpu_s(conn) - backend0)


def _violations(conn) -> str:
    with conn.cursor() as cur:
        cur.execute("SELECT kind, count(*) FROM violations GROUP BY 1 ORDER BY 1")
        return ", ".join(f"{k} {n}" for k, n in cur.fetchall()) or "none"


def _report(head: str, plain: Cost, ruled: Cost, found: str) -> str:
    plain_cpu = plain.us(plain.client_s + plain.backend_s)
    rules_cpu = ruled.us(ruled.client_s + ruled.backend_s)
    return "\n".join(
        [
            head,
            plain.line("ingest without rules"),
            ruled.line("ingest with rules   "),
            f"rules add {ruled.us(ruled.wall_s) - plain.us(plain.wall_s):.1f} µs/fix wall "
            f"({(ruled.wall_s / ruled.fixes) / (plain.wall_s / plain.fixes) * 100 - 100:.0f}%), "
            f"{rules_cpu - plain_cpu:.1f} µs/fix CPU ({(rules_cpu / plain_cpu - 1) * 100:.0f}%) "
            "of the in-process ingestion cost",
            f"violations raised: {found}",
        ]
    )


def run_rules_bench(
    settings: Settings,
    *,
    trucks: int,
    rounds: int,
    polygons: int,
    routes: int,
    workload: str = "random",
    minutes: float = 10.0,
    seed: int = 1,
    repeat: int = 1,
) -> str:
    if workload == "city":
        return _city_bench(settings, trucks=trucks, minutes=minutes, seed=seed, repeat=repeat)
    name, url = _scratch(settings.database_url)
    try:
        conn = connect(url)
        migrate(conn, settings)
        maintain(conn, settings)
        t0 = time.perf_counter()
        devices = _setup(conn, settings, trucks, polygons, routes)
        engine = ComplianceEngine(settings)
        engine.load(conn)
        setup_s = time.perf_counter() - t0
        center = (settings.city["center_lon"], settings.city["center_lat"])
        base = (int(time.time()) - 3 * 3600) * 1000
        batch_size = int(settings.ingest["batch_size"])
        plain = Ingestor(settings)
        plain_cost = _feed(
            conn,
            plain,
            plain.make_writer(conn),
            _batches(devices, rounds, base, center),
            batch_size,
        )
        ruled = Ingestor(settings)
        writer = ruled.make_writer(conn, after_store=[engine.after_store])
        later = base + rounds * 10_000 + 60_000
        rules_cost = _feed(
            conn, ruled, writer, _batches(devices, rounds, later, center), batch_size
        )
        found = _violations(conn)
        conn.close()
    finally:
        drop_database(settings.database_url, name)
    head = (
        f"workload random: {len(engine.zones.index)} zones, {trucks} trucks, "
        f"{len(engine.permits)} permits (set-up {setup_s:.1f} s); batches of {batch_size} fixes"
    )
    return _report(head, plain_cost, rules_cost, found)


def _city_messages(settings: Settings, city, *, minutes: float, warm_s: int):
    """The fleet's messages: the first `warm_s` simulated seconds (to warm up the caches and
    rule state, not timed) and the next `minutes`, as lists of Incoming.

    The simulated window starts at 10:00 city time on the latest day when it is over, so that
    the time-of-day rules (rush-hour bans, permits' hours) see the same window whenever the
    benchmark runs."""
    from simulators.fleet import Fleet, FleetConfig

    duration_s = warm_s + int(minutes * 60)
    tz = ZoneInfo(settings.city["timezone"])
    now = dt.datetime.now(tz)
    start = now.replace(hour=10, minute=0, second=0, microsecond=0)
    while start + dt.timedelta(seconds=duration_s + 120) > now:
        start -= dt.timedelta(days=1)
    start_ms = int(start.timestamp() * 1000)
    fleet = Fleet(
        city, FleetConfig(timezone=settings.city["timezone"]), start_ms=start_ms, settings=settings
    )
    warm = [Incoming(t, p) for t, p in fleet.advance(warm_s)]
    timed = [Incoming(t, p) for t, p in fleet.advance(duration_s)]
    return warm, timed


def _city_bench(
    settings: Settings, *, trucks: int, minutes: float, seed: int, repeat: int = 1
) -> str:
    from simulators.city import city_from_settings, install_city

    city = city_from_settings(settings, seed, trucks)
    warm, timed = _city_messages(settings, city, minutes=minutes, warm_s=120)
    batch_size = int(settings.ingest["batch_size"])

    def measure(with_rules: bool) -> tuple[Cost, str]:
        # The benchmark's own message lists (hundreds of thousands of objects) would make
        # every full garbage collection of the measured code scan them: not a cost a
        # collector pays.
        gc.collect()
        gc.freeze()
        name, url = _scratch(settings.database_url)
        try:
            conn = connect(url)
            migrate(conn, settings)
            maintain(conn, settings)
            install_city(conn, settings, city)
            conn.commit()
            hooks: Sequence = ()
            if with_rules:
                engine = ComplianceEngine(settings)
                engine.load(conn)
                hooks = [engine.after_store]
            ingestor = Ingestor(settings)
            writer = ingestor.make_writer(conn, after_store=list(hooks))
            _feed(conn, ingestor, writer, [warm], batch_size)
            cost = _feed(conn, ingestor, writer, [timed], batch_size)
            found = _violations(conn)
            conn.close()
        finally:
            drop_database(settings.database_url, name)
        return cost, found

    head = (
        f"workload city: seed {seed}, {trucks} trucks, {minutes:g} simulated minutes timed "
        f"after 2 of warm-up, {len(timed):,} messages; batches of {batch_size}"
    )
    # Runs alternate (without, with, without, ...) so that a machine busy with other work
    # for a while weighs on both; the summary takes medians.
    pairs = []
    for _ in range(repeat):
        plain_cost, _ = measure(False)
        rules_cost, found = measure(True)
        pairs.append((plain_cost, rules_cost))
    if repeat == 1:
        return _report(head, plain_cost, rules_cost, found)
    lines = [head]
    for i, (plain_cost, rules_cost) in enumerate(pairs, 1):
        lines.append(f"run {i}:")
        lines.extend(
            "  " + line for line in _report("", plain_cost, rules_cost, found).splitlines()[1:4]
        )

    def cpu(cost: Cost) -> float:
        return cost.us(cost.client_s + cost.backend_s)

    plain_us = statistics.median(cpu(p) for p, _ in pairs)
    added = statistics.median(cpu(r) - cpu(p) for p, r in pairs)
    lines.append(
        f"median of {repeat}: ingest without rules {plain_us:.1f} µs/fix CPU; rules add "
        f"{added:.1f} µs/fix CPU ({added / plain_us * 100:.0f}%)"
    )
    lines.append(f"violations raised: {found}")
    return "\n".join(lines)
