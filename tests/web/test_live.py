"""The live map's snapshot cache (web.live.LiveCache): whatever happens between two full
snapshots, the cached document equals the one the full query gives."""

from __future__ import annotations

import json

import pytest

from tests.web.test_dashboard import seed_fleet
from web.live import LiveCache, live_trucks


def _doc(body: bytes) -> dict:
    doc = json.loads(body)
    doc.pop("server_ms")
    return doc


def _expected(db, crs: str = "wgs84") -> dict:
    doc = json.loads(json.dumps(live_trucks(db, None, overlap_s=0, crs=crs)))
    doc.pop("server_ms")
    return doc


def _same(cache: LiveCache, db, crs: str = "wgs84") -> None:
    """Equal documents; the order of trucks may differ (the cache moves rows around)."""
    got = _doc(cache.snapshot(db, overlap_s=5, crs=crs))
    want = _expected(db, crs)
    for doc in (got, want):
        cols = doc.pop("trucks")
        order = sorted(range(len(cols["id"])), key=lambda i: cols["id"][i])
        doc["trucks"] = {k: [v[i] for i in order] for k, v in cols.items()}
    assert got == want


def _exec(db, sql: str, *args) -> None:
    with db.cursor() as cur:
        cur.execute(sql, args)
    db.commit()


@pytest.mark.parametrize("crs", ["wgs84", "gcj02"])
def test_cache_follows_every_kind_of_change(db, crs):
    _company, ids = seed_fleet(db, 5)
    cache = LiveCache()
    _same(cache, db, crs)
    assert cache.rebuilds == 1
    # a truck moves
    _exec(
        db,
        "UPDATE truck_state SET lat = 22.7, lon = 114.2, updated_at = now() WHERE truck_id = %s",
        ids[1],
    )
    _same(cache, db, crs)
    # a truck is deactivated (the middle one: the last row is swapped into its place)
    _exec(db, "UPDATE trucks SET active = false, updated_at = now() WHERE id = %s", ids[2])
    _same(cache, db, crs)
    # the moved truck moves again, then the deactivated one comes back
    _exec(db, "UPDATE truck_state SET lat = 22.71, updated_at = now() WHERE truck_id = %s", ids[4])
    _same(cache, db, crs)
    _exec(db, "UPDATE trucks SET active = true, updated_at = now() WHERE id = %s", ids[2])
    _same(cache, db, crs)
    # an open violation flags a truck
    _exec(
        db,
        """INSERT INTO violations (truck_id, company_id, kind, stream, started_at)
           SELECT id, company_id, 'speeding', 'main', now() FROM trucks WHERE id = %s""",
        ids[0],
    )
    _same(cache, db, crs)
    assert cache.rebuilds == 1  # all of that through deltas
    # a state row deleted (no delta can show it): noticed by the row count
    _exec(db, "DELETE FROM truck_state WHERE truck_id = %s", ids[3])
    _same(cache, db, crs)
    assert cache.rebuilds == 2


def test_cache_serves_both_crs_and_rebuilds_when_old(db):
    _company, ids = seed_fleet(db, 3)
    cache = LiveCache(rebuild_s=0.0)
    _same(cache, db, "gcj02")
    _same(cache, db, "wgs84")
    _exec(db, "UPDATE truck_state SET lon = 114.3, updated_at = now() WHERE truck_id = %s", ids[0])
    _same(cache, db, "gcj02")
    _same(cache, db, "wgs84")
    assert cache.rebuilds == 4


def test_cache_with_no_trucks(db):
    cache = LiveCache()
    doc = _doc(cache.snapshot(db, overlap_s=5))
    assert doc["count"] == 0 and doc["trucks"]["id"] == [] and doc["full"]


def test_background_refresher_keeps_the_cache_current(db, database_url):
    import time

    _company, ids = seed_fleet(db, 3)
    cache = LiveCache()
    cache.snapshot(db, overlap_s=5)
    stop = cache.start_refresher(database_url, every_s=0.05, overlap_s=5)
    try:
        _exec(
            db, "UPDATE truck_state SET lat = 22.9, updated_at = now() WHERE truck_id = %s", ids[2]
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if 22.9 in cache._cols["lat"]:
                break
            time.sleep(0.05)
        assert 22.9 in cache._cols["lat"]
    finally:
        stop.set()
    _same(cache, db)
    assert cache.rebuilds == 1
