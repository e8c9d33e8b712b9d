"""`muck bench rules`: what the compliance rules add to the cost of ingesting a batch.

In a scratch database next to MUCK_DATABASE_URL's (dropped afterwards): the geofence
benchmark's synthetic city (polygons of 50-500 vertices plus route corridors of 1,000
vertices), registered trucks with permits tying them to sites, disposal sites and routes, and
batches of 1,000 fixes (one per truck, trucks moving, half of them loaded) written through the
real ingestion path (validation, COPY, truck_state) — once without the rules and once with
them. MQTT is left out: it costs the same either way and is measured by `muck bench ingest`.
"""

from __future__ import annotations

import json
import random
import time

import msgspec
import numpy as np

from compliance.engine import ComplianceEngine
from compliance.permits import import_permits, parse_permits_json
from core.config import Settings
from core.db import connect, create_database, drop_database
from core.migrate import migrate
from geofence.bench import synthetic_zones
from geofence.store import upsert_zones
from telemetry.contract import Topics
from telemetry.ingest import Incoming, Ingestor
from telemetry.partitions import maintain


def _scratch(url: str) -> tuple[str, str]:
    return create_database(url, "muck_bench_rules_")


def _drop(url: str, name: str) -> None:
    drop_database(url, name)


def _setup(conn, settings: Settings, trucks: int, polygons: int, routes: int) -> list[str]:
    zones = synthetic_zones(dict(settings.city), n_polygons=polygons, n_routes=routes)
    upsert_zones(conn, zones)
    codes = {
        kind: [z.code for z in zones if z.kind == kind] for kind in ("site", "disposal", "route")
    }
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO companies (name, credit_code, credit_code_valid)
               VALUES ('基准运输公司', '91110000600037341L', true)"""
        )
        cur.execute(
            """INSERT INTO trucks (plate, company_id)
               SELECT '粤B' || lpad(g::text, 5, '0'), 1 FROM generate_series(1, %s) g""",
            (trucks,),
        )
        cur.execute(
            """INSERT INTO terminals (device_id, truck_id, valid_from)
               SELECT 'RB' || lpad(id::text, 6, '0'), id, now() - interval '30 days' FROM trucks"""
        )
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
    return [f"RB{t:06d}" for t in range(1, trucks + 1)]


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


def _feed(conn, ingestor: Ingestor, writer, batches, batch_size: int) -> tuple[float, int]:
    fixes = 0
    started = time.perf_counter()
    for round_ in batches:
        for i in range(0, len(round_), batch_size):
            part = round_[i : i + batch_size]
            with conn.cursor() as cur:
                batch = ingestor.build(part, cur)
            writer.write(batch)
            fixes += len(batch.inserted)
    return time.perf_counter() - started, fixes


def run_rules_bench(
    settings: Settings, *, trucks: int, rounds: int, polygons: int, routes: int
) -> str:
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
        plain_s, plain_n = _feed(
            conn,
            plain,
            plain.make_writer(conn),
            _batches(devices, rounds, base, center),
            batch_size,
        )
        ruled = Ingestor(settings)
        writer = ruled.make_writer(conn, after_store=[engine.after_store])
        later = base + rounds * 10_000 + 60_000
        rules_s, rules_n = _feed(
            conn, ruled, writer, _batches(devices, rounds, later, center), batch_size
        )
        with conn.cursor() as cur:
            cur.execute("SELECT kind, count(*) FROM violations GROUP BY 1 ORDER BY 1")
            found = ", ".join(f"{k} {n}" for k, n in cur.fetchall()) or "none"
        conn.close()
    finally:
        _drop(settings.database_url, name)
    plain_us = plain_s / plain_n * 1e6
    rules_us = rules_s / rules_n * 1e6
    return "\n".join(
        [
            f"city: {len(engine.zones.index)} zones, {trucks} trucks, {len(engine.permits)} permits "
            f"(set-up {setup_s:.1f} s); batches of {batch_size} fixes",
            f"ingest without rules: {plain_n} fixes in {plain_s:.2f} s = {plain_us:.1f} µs/fix "
            f"({plain_n / plain_s:,.0f} fixes/s)",
            f"ingest with rules:    {rules_n} fixes in {rules_s:.2f} s = {rules_us:.1f} µs/fix "
            f"({rules_n / rules_s:,.0f} fixes/s)",
            f"rules add {rules_us - plain_us:.1f} µs/fix = {(rules_us / plain_us - 1) * 100:.0f}% of "
            "the database-side ingestion cost",
            f"violations raised: {found}",
        ]
    )
