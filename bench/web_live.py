"""Benchmark of the live map's update: /api/v1/trucks/live for 20,000 trucks (full and delta).

Runs in a scratch database created next to MUCK_DATABASE_URL's and dropped afterwards.
"""

from __future__ import annotations

import statistics
import time

import msgspec

from core.config import Settings
from core.db import connect, create_database, drop_database
from core.migrate import migrate
from registry.service import upsert_company, upsert_truck

_ENCODER = msgspec.json.Encoder()


def seed(conn, trucks: int, center: tuple[float, float]) -> None:
    """`trucks` trucks in 50 companies, each with a state scattered over ±0.3° of the centre."""
    with conn.cursor() as cur:
        companies = [upsert_company(cur, f"运输公司 {g}", None) for g in range(1, 51)]
        for g in range(1, trucks + 1):
            upsert_truck(cur, f"粤B{g:05d}", companies[g % 50])
        # Backdated, as a registry edited long ago: a delta re-reads `web.live_overlap_s`
        # before its cursor, trucks.updated_at included, so trucks stamped by the seeding a
        # few seconds earlier could all be sent again by the deltas the benchmark times.
        cur.execute("UPDATE trucks SET updated_at = now() - interval '2 hours'")
        # truck_state is written set-based: telemetry has no public function to write it
        # outside a stored batch, and the benchmark needs a state for every truck, not the
        # positions a batch would also store.
        cur.execute(
            """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon,
                                        speed_kmh, heading, lid, lift, load, acc, updated_at)
               SELECT id, 'DEV' || id, now() - random() * interval '10 minutes', now(),
                      %s + (random() - 0.5) * 0.6, %s + (random() - 0.5) * 0.6,
                      (random() * 60)::real, (random() * 359)::int,
                      'closed', 'down', (ARRAY['empty','half','full'])[1 + id %% 3]::load_state,
                      true, now() - interval '1 hour' - random() * interval '10 minutes'
               FROM trucks""",
            (center[1], center[0]),
        )
        cur.execute("ANALYZE trucks; ANALYZE truck_state; ANALYZE companies")
    conn.commit()


def _time(
    client, url: str, headers: dict, repeat: int, before=None
) -> tuple[list[float], int, int]:
    """Time `repeat` requests; `before()` runs (untimed) before each one."""
    times, size, count = [], 0, 0
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        resp = client.get(url, headers=headers)
        times.append((time.perf_counter() - t0) * 1000)
        assert resp.status_code == 200, resp.get_data(as_text=True)[:200]
        size = len(resp.data)
        count = resp.get_json()["count"]
    return times, size, count


def _fmt(name: str, times: list[float], size: int, count: int) -> str:
    times = sorted(times)
    p50 = statistics.median(times)
    p95 = times[min(len(times) - 1, int(len(times) * 0.95))]
    return f"{name:<32} trucks={count:>6}  p50={p50:6.1f} ms  p95={p95:6.1f} ms  body={size / 1024:7.0f} KiB"


def run_bench(
    settings: Settings, *, trucks: int, changed: int, repeat: int, listed: int = 0
) -> str:
    from web import create_app
    from web.users import create_token, create_user

    admin_url = settings.database_url
    if not admin_url:
        from core.config import ConfigError

        raise ConfigError("MUCK_DATABASE_URL is not set")
    name, url = create_database(admin_url, "muck_bench_web_")
    lines = []
    try:
        conn = connect(url)
        migrate(conn, settings)
        t0 = time.perf_counter()
        seed(conn, trucks, (settings.city["center_lon"], settings.city["center_lat"]))
        lines.append(f"seeded {trucks} trucks in {time.perf_counter() - t0:.1f} s")
        if listed:
            # Companies on credit lists in force: each answer carries their flags.
            with conn.cursor() as cur:
                cur.execute(
                    """INSERT INTO credit_list_entries (subject_kind, subject_key, company_id,
                           subject_name, list_type, reason, legal_basis, authority_name,
                           proposed_by, status, listed_on, planned_removal_on)
                       SELECT 'company', id::text, id, name,
                              (ARRAY['watch', 'red', 'black'])[1 + id %% 3], 'bench', 'bench',
                              'bench', 'bench', 'active', current_date, current_date + 30
                       FROM companies ORDER BY companies.id LIMIT %s""",
                    (listed,),
                )
                lines.append(f"{cur.rowcount} companies on credit lists")
            conn.commit()
        with conn.cursor() as cur:
            create_user(cur, "bench", "bench-password", "supervisor", actor="bench")
            token = create_token(cur, "bench", "bench", actor="bench")
        conn.commit()
        bench_settings = Settings(settings.sections, url, settings.mqtt_url, settings.source)
        headers = {"Authorization": f"Bearer {token}"}

        def move(n: int):
            # What the collector's truck_state upsert does for `n` trucks, in one statement.
            def run() -> None:
                with conn.cursor() as cur:
                    cur.execute(
                        """UPDATE truck_state SET lat = lat + 0.00001, fix_time = now(),
                                  updated_at = now() WHERE truck_id <= %s""",
                        (n,),
                    )
                conn.commit()

            return run

        # The first full snapshot of a process runs the full query; rebuilding every time
        # (MUCK_LIVE_REBUILD_S = 0) measures that path.
        cold = create_app(
            {
                "MUCK_SETTINGS": bench_settings,
                "SECRET_KEY": "bench",
                "MUCK_LIVE_REBUILD_S": 0,
                "MUCK_LIVE_REFRESH_S": 0,
            }
        )
        cold_client = cold.test_client()
        cold_client.get("/api/v1/trucks/live", headers=headers)  # warm the pool
        for crs in ("wgs84", "gcj02"):
            timed = _time(cold_client, f"/api/v1/trucks/live?crs={crs}", headers, repeat)
            lines.append(_fmt(f"full, full query ({crs})", *timed))
        cold.extensions["muck_pool"].close()

        app = create_app({"MUCK_SETTINGS": bench_settings, "SECRET_KEY": "bench"})
        client = app.test_client()
        for crs in ("wgs84", "gcj02"):
            client.get(f"/api/v1/trucks/live?crs={crs}", headers=headers)  # fill the cache
            timed = _time(client, f"/api/v1/trucks/live?crs={crs}", headers, repeat, move(changed))
            lines.append(_fmt(f"full, {changed} changed ({crs})", *timed))
            timed = _time(client, f"/api/v1/trucks/live?crs={crs}", headers, repeat)
            lines.append(_fmt(f"full, none changed ({crs})", *timed))
        cursor = client.get("/api/v1/trucks/live", headers=headers).get_json()["cursor"]
        move(changed)()
        delta = _time(client, f"/api/v1/trucks/live?since={cursor}", headers, repeat)
        lines.append(_fmt(f"delta ({changed} changed)", *delta))
        after = client.get(f"/api/v1/trucks/live?since={cursor}", headers=headers).get_json()[
            "cursor"
        ]
        empty = _time(client, f"/api/v1/trucks/live?since={after}", headers, repeat)
        lines.append(_fmt("delta (nothing changed; overlap)", *empty))
        lines.append(f"cache rebuilds: {app.extensions['muck_live_cache'].rebuilds}")
        # The paths full snapshots took before the cache (still used for deltas), called
        # directly under the same load, for comparison (no HTTP, no authentication).
        from web.live import live_trucks, live_trucks_json

        for label, call in (
            ("before: SQL-built JSON (wgs84)", lambda: live_trucks_json(conn, None, overlap_s=5)),
            (
                "before: rows + numpy (gcj02)",
                lambda: _ENCODER.encode(live_trucks(conn, None, overlap_s=5, crs="gcj02")),
            ),
        ):
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                body = call()
                times.append((time.perf_counter() - t0) * 1000)
            lines.append(_fmt(label, times, len(body), trucks))
        app.extensions["muck_live_refresher"].set()  # stop the background refresher
        app.extensions["muck_pool"].close()
        conn.close()
    finally:
        drop_database(admin_url, name)
    return "\n".join(lines)
