"""Benchmark of the violations list, the violation page and the track around a violation,
over a large scratch database: N violations and M positions, generated set-based in
PostgreSQL (generate_series; no Python row loop) on the real schema from `muck migrate`.
Companies and trucks (thousands, not millions) go through `registry.service`, zones and
districts through the geofence import path.

The data: `trucks` trucks in 100 companies, four districts (the quadrants around the city
centre, imported as district polygons), 200 zones; positions for every truck every 30 s
over 10.4 hours a day for as many recent days as M needs (daily partitions, as the collector
makes them); violations spread over the last 365 days (so the recent ones have their track).

Generating 100,000,000 positions takes a long time, so the database can be kept
(`--db-name NAME`) and reused by a later run with the same name: data already there is not
generated again.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import time
from collections.abc import Callable

from psycopg2 import sql

from core.config import Settings

FIXES_PER_DAY = 1250  # every 30 s for 10.4 hours
KIND_MIX = (
    # kind, share (per mille) of the generated violations
    ("speeding", 300),
    ("route_deviation", 150),
    ("unsealed_transport", 150),
    ("restricted_hours", 100),
    ("restricted_zone", 80),
    ("going_dark", 120),
    ("illegal_dumping", 40),
    ("unapproved_disposal", 30),
    ("no_valid_permit", 30),
)
DISTRICTS = (  # code, name, quadrant (sign of dlon, sign of dlat)
    ("440304", "福田区", (-1, -1)),
    ("440303", "罗湖区", (1, -1)),
    ("440305", "南山区", (-1, 1)),
    ("440306", "宝安区", (1, 1)),
)
HALF_SPAN = 0.35  # degrees: districts and positions cover centre ± this


def _log(say: Callable[[str], None] | None, text: str) -> None:
    if say is not None:
        say(text)


def _count(cur, table: str) -> int:
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table)))
    return cur.fetchone()[0]


def district_features(center: tuple[float, float]) -> list[dict]:
    """Four districts: the quadrants of centre ± HALF_SPAN (GeoJSON features, WGS-84)."""
    lon0, lat0 = center
    out = []
    for code, name, (sx, sy) in DISTRICTS:
        x1, x2 = sorted((lon0, lon0 + sx * HALF_SPAN))
        y1, y2 = sorted((lat0, lat0 + sy * HALF_SPAN))
        ring = [[x1, y1], [x2, y1], [x2, y2], [x1, y2], [x1, y1]]
        out.append(
            {
                "type": "Feature",
                "properties": {"kind": "district", "code": code, "name": name},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    return out


def seed_registry(conn, settings: Settings, trucks: int, say=None) -> None:
    """Companies, trucks, districts (through the import path) and zones."""
    from geofence.io import parse_zones, read_geojson
    from geofence.store import upsert_districts, upsert_zones
    from registry.service import upsert_company, upsert_truck

    with conn.cursor() as cur:
        if _count(cur, "trucks") >= trucks:
            return
        companies = [
            upsert_company(cur, f"渣土运输公司 {g}", f"91440300{g:010d}") for g in range(1, 101)
        ]
        # Truck ids are 1..trucks in order (a fresh sequence): the positions and violations
        # generated below name their trucks by id.
        for g in range(1, trucks + 1):
            upsert_truck(cur, f"粤B{g:05d}挂", companies[g % 100])
    conn.commit()
    center = (settings.city["center_lon"], settings.city["center_lat"])
    doc = {"type": "FeatureCollection", "features": district_features(center)}
    items = parse_zones(read_geojson(json.dumps(doc)), center=center, max_distance_km=300)
    upsert_districts(conn, [z for z in items if z.kind == "district"])
    zones = []
    for i in range(200):
        lon = center[0] + math.cos(i * 2.4) * HALF_SPAN * 0.8 * ((i % 10) + 1) / 10
        lat = center[1] + math.sin(i * 2.4) * HALF_SPAN * 0.8 * ((i % 10) + 1) / 10
        d = 0.004
        ring = [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        kind = ("site", "disposal", "restricted", "speed")[i % 4]
        props = {"kind": kind, "code": f"Z{i:03d}", "name": f"区域 {i}", "district": "福田区"}
        if kind == "speed":
            props["speed_limit_kmh"] = 40
        zones.append(
            {
                "type": "Feature",
                "properties": props,
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        )
    parsed = parse_zones(
        read_geojson(json.dumps({"type": "FeatureCollection", "features": zones})),
        center=center,
        max_distance_km=300,
    )
    upsert_zones(conn, parsed)
    _log(say, f"registry: {trucks} trucks, 100 companies, 4 districts, 200 zones")


def seed_positions(conn, settings: Settings, positions: int, trucks: int, say=None) -> int:
    """About `positions` fixes (trucks × days × fixes a day), in daily partitions ending
    yesterday. The indexes of the real schema are dropped during the load and built again
    after it (faster than keeping 100M B-tree entries in order row by row); the partitions
    are created UNLOGGED to spare writing 15 GB of WAL (reads are unaffected).

    Raw SQL on telemetry's table on purpose: the collector's path (decode, validate, COPY,
    truck_state) would take hours for 100M fixes, and what is timed is reading them."""
    if positions <= 0:
        return 0
    with conn.cursor() as cur:
        have = _count(cur, "positions")
        if have > 0:
            _log(say, f"positions: {have} already there")
            return have
    days = max(1, math.ceil(positions / (trucks * FIXES_PER_DAY)))
    per_day = max(1, positions // (trucks * days))
    today = dt.datetime.now(dt.UTC).date()
    lon0, lat0 = settings.city["center_lon"], settings.city["center_lat"]
    t0 = time.perf_counter()
    with conn.cursor() as cur:
        cur.execute("ALTER TABLE positions DROP CONSTRAINT positions_pkey")
        cur.execute("DROP INDEX positions_truck_time_idx")
        conn.commit()
        for n in range(days):
            day = today - dt.timedelta(days=days - n)
            start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
            name = f"positions_p{day:%Y%m%d}"
            cur.execute(
                sql.SQL(
                    "CREATE UNLOGGED TABLE {} PARTITION OF positions FOR VALUES FROM (%s) TO (%s)"
                ).format(sql.Identifier(name)),
                (start, start + dt.timedelta(days=1)),
            )
            # Each truck drives a slow loop around its own home point; lid, lift and load
            # change with the phase of its day.
            cur.execute(
                sql.SQL(
                    """INSERT INTO {} (device_id, fix_time, received_at, truck_id, lat, lon,
                           speed_kmh, heading, lid, lift, load, acc, sats, hdop, seq)
                       SELECT 'D' || lpad(t::text, 7, '0'),
                              %(start)s + (t %% 600) * interval '1 second' + s * interval '30 seconds',
                              %(start)s + (t %% 600) * interval '1 second' + s * interval '30 seconds'
                                + interval '2 seconds',
                              t,
                              %(lat0)s + %(span)s * sin(t * 1.7) + 0.02 * sin(s / 40.0 + t),
                              %(lon0)s + %(span)s * cos(t * 1.3) + 0.02 * cos(s / 40.0 + t),
                              (25 + 25 * sin(s / 15.0))::real,
                              ((s * 7 + t) %% 360)::smallint,
                              CASE WHEN s %% 97 = 0 THEN 'open' ELSE 'closed' END::lid_state,
                              CASE WHEN s %% 311 = 0 THEN 'up' ELSE 'down' END::lift_state,
                              (ARRAY['empty', 'half', 'full'])[1 + (s / 200) %% 3]::load_state,
                              true, 12, 0.9, s
                       FROM generate_series(1, %(trucks)s) t,
                            generate_series(0, %(per_day)s - 1) s"""
                ).format(sql.Identifier(name)),
                {
                    "start": start,
                    "lat0": lat0,
                    "lon0": lon0,
                    "span": HALF_SPAN * 0.9,
                    "trucks": trucks,
                    "per_day": per_day,
                },
            )
            conn.commit()
            _log(say, f"positions: day {n + 1}/{days} ({time.perf_counter() - t0:.0f} s)")
        cur.execute("SET maintenance_work_mem = '1GB'")
        cur.execute("ALTER TABLE positions ADD PRIMARY KEY (device_id, fix_time)")
        conn.commit()
        _log(say, f"positions: primary key built ({time.perf_counter() - t0:.0f} s)")
        cur.execute("CREATE INDEX positions_truck_time_idx ON positions (truck_id, fix_time)")
        conn.commit()
        _log(say, f"positions: truck/time index built ({time.perf_counter() - t0:.0f} s)")
        conn.commit()
    _vacuum(conn, "positions")
    total = trucks * days * per_day
    _log(say, f"positions: {total} in {days} days, {time.perf_counter() - t0:.0f} s")
    return total


def seed_violations(
    conn, violations: int, trucks: int, center: tuple[float, float], say=None
) -> int:
    """`violations` violations over the last 365 days, every kind, status, severity; the
    recent ones new and the old ones reviewed. (No evidence records: the violation page then
    reads the positions table, which the bench leaves empty; evidence packs are not
    benchmarked here.)

    Raw SQL on compliance's table on purpose: violations are only ever written by the rule
    engine from fixes, which cannot make a million of them spread over a year in minutes."""
    with conn.cursor() as cur:
        have = _count(cur, "violations")
        if have >= violations:
            _log(say, f"violations: {have} already there")
            return have
        t0 = time.perf_counter()
        kinds, weights = zip(*KIND_MIX, strict=True)
        bounds = [sum(weights[: i + 1]) for i in range(len(weights))]
        # the kind of violation g: the first kind whose cumulative share exceeds hash(g)
        kind_case = (
            "CASE "
            + " ".join(
                f"WHEN (g * 7919) % 1000 < {b} THEN '{k}'"
                for k, b in zip(kinds, bounds, strict=True)
            )
            + " END"
        )
        cur.execute(
            sql.SQL(
                """INSERT INTO violations (truck_id, company_id, kind, stream, started_at,
                       ended_at, worst_value, worst_unit, severity, permit_no, zone_code, lat, lon,
                       points, legal_basis, rule_params, status, decision_no,
                       detected_at, updated_at)
                   SELECT x.truck_id, t.company_id, x.kind, 'main', x.started_at,
                          CASE WHEN x.age < interval '20 minutes' THEN NULL
                               ELSE x.started_at + (3 + g %% 40) * interval '1 minute' END,
                          20 + g %% 60, 'km/h',
                          CASE WHEN g %% 5 = 0 THEN 'serious' ELSE 'minor' END,
                          'HZ-' || (1 + x.truck_id %% 3000),
                          CASE WHEN g %% 5 < 2 THEN 'Z' || lpad((g %% 200)::text, 3, '0') END,
                          x.lat, x.lon, 1 + g %% 5, '《深圳市建筑废弃物管理办法》第四十条',
                          '{{"limit_kmh": 60, "min_duration_s": 30}}'::jsonb,
                          CASE WHEN x.age < interval '3 days' THEN 'new'
                               WHEN g %% 10 < 6 THEN 'closed'
                               WHEN g %% 10 < 8 THEN 'confirmed'
                               WHEN g %% 10 < 9 THEN 'dismissed'
                               ELSE 'case_opened' END,
                          CASE WHEN x.age >= interval '3 days' AND g %% 10 IN (0,1,2,3,4,5,9)
                               THEN '深城管罚字〔2026〕' || g || '号' END,
                          x.started_at + interval '1 minute', x.started_at + interval '1 hour'
                   FROM (SELECT g, 1 + (g * 7919) %% %(trucks)s AS truck_id,
                                {kind} AS kind,
                                now() - (g::float8 / %(n)s) * interval '365 days'
                                  - (g %% 7) * interval '1 second' AS started_at,
                                (g::float8 / %(n)s) * interval '365 days' AS age,
                                %(lat0)s + %(span)s * sin(g * 0.37) AS lat,
                                %(lon0)s + %(span)s * cos(g * 0.53) AS lon
                         FROM generate_series(%(first)s::bigint, %(n)s::bigint) g) x
                   JOIN trucks t ON t.id = x.truck_id"""
            ).format(kind=sql.SQL(kind_case.replace("%", "%%"))),
            {
                "n": violations,
                "first": have + 1,
                "trucks": trucks,
                "lat0": center[1],
                "lon0": center[0],
                "span": HALF_SPAN * 0.95,
            },
        )
        conn.commit()
    _vacuum(conn, "violations")
    _log(say, f"violations: {violations} in {time.perf_counter() - t0:.0f} s")
    return violations


def _vacuum(conn, table: str) -> None:
    """VACUUM ANALYZE, as autovacuum would have done by the time anyone queries: sets the
    visibility map, without which index-only scans still read the heap."""
    conn.commit()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))
    finally:
        conn.autocommit = False


def percentile(times: list[float], q: float) -> float:
    times = sorted(times)
    return times[min(len(times) - 1, max(0, math.ceil(len(times) * q) - 1))]


def summarise(name: str, times: list[float], extra: str = "") -> str:
    return (
        f"{name:<44} n={len(times):>3}  p50={statistics.median(times):7.1f} ms  "
        f"p95={percentile(times, 0.95):7.1f} ms  max={max(times):7.1f} ms  {extra}"
    )


# ---- the benchmark --------------------------------------------------------------------------


def _shapes(now: dt.datetime, trucks: int) -> list[tuple[str, Callable[[int], str]]]:
    """(name, k -> URL): realistic filter mixes; k varies the values between repetitions."""
    codes = [d[0] for d in DISTRICTS]
    kinds = [k for k, _ in KIND_MIX]

    def day(n: float) -> str:
        return str(int((now - dt.timedelta(days=n)).timestamp() * 1000))

    api = "/api/v1/violations?"
    return [
        ("no filter, newest first", lambda k: api),
        ("last 7 days", lambda k: f"{api}from={day(7 + k % 3)}"),
        ("last 30 days, district", lambda k: f"{api}from={day(30)}&district={codes[k % 4]}"),
        (
            "last 30 days, kind, status new",
            lambda k: f"{api}from={day(30)}&kind={kinds[k % 9]}&status=new",
        ),
        (
            "90 days, district, serious, kind",
            lambda k: (
                f"{api}from={day(90)}&district={codes[k % 4]}&severity=serious&kind={kinds[k % 9]}"
            ),
        ),
        ("one company (id), all time", lambda k: f"{api}company_id={1 + k % 100}"),
        (
            "company name part, 90 days",
            lambda k: f"{api}company=运输公司 {1 + k % 100}&from={day(90)}",
        ),
        ("plate part, all time", lambda k: f"{api}plate=B{(17 * k) % trucks + 1:05d}"),
        ("zone code, all time", lambda k: f"{api}zone=Z{(k * 7) % 200:03d}"),
        (
            "a day, confirmed",
            lambda k: f"{api}from={day(40 + k)}&to={day(39 + k)}&status=confirmed",
        ),
        ("all time, sort by points", lambda k: f"{api}sort=points&dir={('asc', 'desc')[k % 2]}"),
        ("30 days, sort by plate", lambda k: f"{api}from={day(30)}&sort=plate&dir=asc"),
        ("7 days, sort by company", lambda k: f"{api}from={day(7)}&sort=company"),
        ("all time, severity sort", lambda k: f"{api}sort=severity"),
        ("no filter, page 100", lambda k: f"{api}page={100 + k}"),
        (
            "list page (HTML), 30 days, district",
            lambda k: f"/violations/?from={day(30)}&district={codes[k % 4]}",
        ),
    ]


def run_violation_bench(
    settings: Settings,
    *,
    violations: int,
    positions: int,
    trucks: int,
    repeat: int,
    db_name: str | None,
    say: Callable[[str], None] | None = None,
) -> str:
    """Generate (or reuse) the data and time the list, the violation page and the track."""
    import psycopg2

    from core.config import ConfigError
    from core.db import connect, create_database, database_url, drop_database
    from core.migrate import migrate
    from web import create_app
    from web.users import create_token, create_user

    admin_url = settings.database_url
    if not admin_url:
        raise ConfigError("MUCK_DATABASE_URL is not set")
    if db_name:
        name, url = db_name, database_url(admin_url, db_name)
        admin = psycopg2.connect(admin_url)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db_name,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
        admin.close()
    else:
        name, url = create_database(admin_url, "muck_bench_violations_")
    lines: list[str] = []
    center = (settings.city["center_lon"], settings.city["center_lat"])
    try:
        conn = connect(url)
        migrate(conn, settings)
        seed_registry(conn, settings, trucks, say)
        made = seed_positions(conn, settings, positions, trucks, say)
        seed_violations(conn, violations, trucks, center, say)
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM violations")
            nv = cur.fetchone()[0]
            cur.execute(
                "SELECT pg_size_pretty(pg_total_relation_size('violations')),"
                " pg_size_pretty(sum(pg_total_relation_size(inhrelid))) FROM pg_inherits"
                " WHERE inhparent = 'positions'::regclass"
            )
            vsize, psize = cur.fetchone()
            cur.execute("SELECT 1 FROM web_users WHERE username = 'bench'")
            if cur.fetchone() is None:  # a kept database has it from the previous run
                create_user(cur, "bench", "bench-password", "enforcement", actor="bench")
            token = create_token(cur, "bench", "bench", actor="bench")
            # recent violations (their track is in positions) for the page and track timings
            cur.execute(
                """SELECT id, truck_id, started_at, ended_at FROM violations
                   WHERE started_at > now() - interval '10 days' AND ended_at IS NOT NULL
                   ORDER BY id LIMIT %s""",
                (repeat,),
            )
            recent = cur.fetchall()
        conn.commit()
        lines.append(
            f"data: {nv:,} violations ({vsize}), {made:,} positions ({psize}), {trucks:,} trucks"
        )
        bench_settings = Settings(settings.sections, url, settings.mqtt_url, settings.source)
        app = create_app({"MUCK_SETTINGS": bench_settings, "SECRET_KEY": "bench"})
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        now = dt.datetime.now(dt.UTC)

        def timed(url_of: Callable[[int], str], use_headers: bool = True) -> list[float]:
            client.get(url_of(0), headers=headers)  # warm
            times = []
            for k in range(repeat):
                t0 = time.perf_counter()
                resp = client.get(url_of(k), headers=headers if use_headers else {})
                times.append((time.perf_counter() - t0) * 1000)
                if resp.status_code != 200:
                    raise RuntimeError(f"{url_of(k)}: {resp.status_code} {resp.data[:300]!r}")
            return times

        for shape, url_of in _shapes(now, trucks):
            if url_of(0).startswith("/violations/"):
                times = _timed_page(app, url_of, repeat)
            else:
                times = timed(url_of)
            lines.append(summarise(shape, times))
        if recent:
            ids = [r[0] for r in recent]
            lines.append(
                summarise(
                    "violation, API (all columns)",
                    timed(lambda k: f"/api/v1/violations/{ids[k % len(ids)]}"),
                )
            )
            lines.append(
                summarise(
                    "violation page (HTML, evidence)",
                    _timed_page(app, lambda k: f"/violations/{ids[k % len(ids)]}", repeat),
                )
            )

            def track_url(k: int) -> str:
                _vid, tid, start, end = recent[k % len(recent)]
                t1 = int((start - dt.timedelta(minutes=10)).timestamp() * 1000)
                t2 = int((end + dt.timedelta(minutes=10)).timestamp() * 1000)
                return f"/api/v1/trucks/{tid}/track?from={t1}&to={t2}"

            lines.append(summarise("track around a violation (positions)", timed(track_url)))
        app.extensions["muck_pool"].close()
        conn.close()
    finally:
        if not db_name:
            drop_database(admin_url, name)
    return "\n".join(lines)


def _timed_page(app, url_of: Callable[[int], str], repeat: int) -> list[float]:
    """HTML pages need a session: log in through the form, then time the GETs."""
    import re

    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" (?:type="hidden" )?value="([^"]+)"', page).group(1)
    client.post(
        "/login", data={"username": "bench", "password": "bench-password", "csrf_token": token}
    )
    client.get(url_of(0))
    times = []
    for k in range(repeat):
        t0 = time.perf_counter()
        resp = client.get(url_of(k))
        times.append((time.perf_counter() - t0) * 1000)
        if resp.status_code != 200:
            raise RuntimeError(f"{url_of(k)}: {resp.status_code}")
    return times
