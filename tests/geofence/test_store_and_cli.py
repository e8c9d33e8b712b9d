"""Zones through the real database: import/export round trips, rejected files, the CLI, and
reloading the catalogue when zones change."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from click.testing import CliRunner
from pyproj import Geod

from core.clicontext import MuckContext
from core.config import load_settings
from geofence import coords
from geofence.catalog import ZoneCatalog
from geofence.cli import zones as zones_cli
from geofence.io import ZoneImportError, export_geojson, read_zones_file
from geofence.store import add_ban_day, current_version, load_zones, set_active, upsert_zones

EXAMPLES = Path(__file__).resolve().parents[2] / "geofence" / "examples"
TZ = ZoneInfo("Asia/Shanghai")
GEOD = Geod(ellps="WGS84")


def _settings(database_url, monkeypatch):
    monkeypatch.setenv("MUCK_DATABASE_URL", database_url)
    return load_settings()


def _run(args, settings_env=None):
    runner = CliRunner()
    return runner.invoke(zones_cli, args, obj=MuckContext(None), catch_exceptions=False)


def _count(db) -> int:
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM geofence_zones")
        n = cur.fetchone()[0]
    db.commit()
    return n


def test_import_export_round_trip_through_the_database(db, database_url, monkeypatch, tmp_path):
    _settings(database_url, monkeypatch)
    result = _run(["import", str(EXAMPLES / "zones.geojson")])
    assert result.exit_code == 0, result.output
    assert "7 inserted" in result.output
    original = {z.code: z for z in read_zones_file(EXAMPLES / "zones.geojson")}
    stored = {z.code: z for z in load_zones(db)}
    assert set(stored) == set(original)
    for code, zone in original.items():
        got = stored[code]
        assert (got.kind, got.name, got.district, got.valid_from, got.valid_to) == (
            zone.kind,
            zone.name,
            zone.district,
            zone.valid_from,
            zone.valid_to,
        )
        assert got.attributes == zone.attributes
        assert json.dumps(got.geometry["coordinates"]) == json.dumps(
            json.loads(json.dumps(zone.geometry["coordinates"]))
        )
    out = tmp_path / "out.geojson"
    result = _run(["export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text(encoding="utf-8"))
    assert len(exported["features"]) == 7
    # re-importing the export changes nothing but updated_at: upsert by code
    result = _run(["import", str(out)])
    assert "0 inserted, 7 updated" in result.output
    again = {z.code: z for z in load_zones(db)}
    assert {c: (z.geometry, z.attributes, z.valid_to) for c, z in again.items()} == {
        c: (z.geometry, z.attributes, z.valid_to) for c, z in stored.items()
    }
    assert _count(db) == 7
    # list and district filter
    result = _run(["list", "--district", "福田区"])
    assert result.exit_code == 0
    codes = [line.split("\t")[0] for line in result.output.splitlines() if "\t" in line]
    assert sorted(codes) == ["NOGO-CBD", "NOGO-SCHOOL-001", "ROUTE-001", "SITE-001"]


def test_gcj02_import_is_stored_as_wgs84_and_exports_back(db, database_url, monkeypatch, tmp_path):
    _settings(database_url, monkeypatch)
    wgs = np.array([[114.05, 22.54], [114.06, 22.54], [114.06, 22.55], [114.05, 22.55]])
    glon, glat = coords.wgs84_to_gcj02(wgs[:, 0], wgs[:, 1])
    ring = np.column_stack([glon, glat]).tolist()
    ring.append(ring[0])
    doc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {"kind": "site", "code": "AMAP-1", "name": "drawn on AMap"},
                "geometry": {"type": "Polygon", "coordinates": [ring]},
            }
        ],
    }
    path = tmp_path / "amap.geojson"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert _run(["import", str(path), "--crs", "gcj02"]).exit_code == 0
    stored = np.array(load_zones(db)[0].geometry["coordinates"][0][:4])
    err = GEOD.inv(stored[:, 0], stored[:, 1], wgs[:, 0], wgs[:, 1])[2]
    assert err.max() < 0.01
    shift = GEOD.inv(glon, glat, wgs[:, 0], wgs[:, 1])[2]
    assert shift.min() > 100  # the GCJ offset really was removed
    out = tmp_path / "back.geojson"
    assert _run(["export", "-o", str(out), "--crs", "gcj02"]).exit_code == 0
    back = np.array(json.loads(out.read_text())["features"][0]["geometry"]["coordinates"][0][:4])
    assert np.abs(back - np.array(ring[:4])).max() < 1e-8


def test_gpx_and_kml_routes(db, database_url, monkeypatch):
    _settings(database_url, monkeypatch)
    result = _run(["import", str(EXAMPLES / "route.gpx")])
    assert result.exit_code == 1 and "missing width_m" in result.output.replace("needs", "missing")
    assert "ROUTE-GPX-001" in result.output
    assert _run(["import", str(EXAMPLES / "route.gpx"), "--width-m", "60"]).exit_code == 0
    assert _run(["import", str(EXAMPLES / "route.kml")]).exit_code == 0
    stored = {z.code: z for z in load_zones(db)}
    assert stored["ROUTE-GPX-001"].width_m == 60.0
    assert stored["ROUTE-GPX-001"].name == "宝安区某工地至某消纳场"
    assert stored["ROUTE-KML-001"].width_m == 40.0
    assert stored["NOGO-KML-001"].attributes["windows"][0]["start"] == "07:00"


BAD_FEATURES = [
    ({"kind": "dump", "code": "X1"}, "unknown kind 'dump'"),
    ({"kind": "route", "code": "X2"}, "needs width_m"),
    (
        {"kind": "site", "code": "X3", "valid_from": "2026-05-01", "valid_to": "2026-04-01"},
        "valid_to 2026-04-01 is before valid_from",
    ),
    (
        {"kind": "restricted", "code": "X4", "windows": [{"start": "25:00", "end": "08:00"}]},
        "bad time window",
    ),
    (
        {"kind": "restricted", "code": "X5", "windows": [{"start": "08:00", "end": "08:00"}]},
        "start equals end",
    ),
    ({"kind": "speed", "code": "X6"}, "needs speed_limit_kmh or road_class"),
    ({"kind": "speed", "code": "X8", "road_class": "motorway"}, "road_class 'motorway' is not"),
    ({"kind": "site", "code": "X7", "colour": "red"}, "unknown properties ['colour']"),
]


def _square(lon=114.06, lat=22.55, d=0.002):
    return {
        "type": "Polygon",
        "coordinates": [
            [[lon, lat], [lon + d, lat], [lon + d, lat + d], [lon, lat + d], [lon, lat]]
        ],
    }


def _line():
    return {"type": "LineString", "coordinates": [[114.06, 22.55], [114.07, 22.56]]}


def test_bad_file_is_rejected_whole_with_every_feature_named(
    db, database_url, monkeypatch, tmp_path
):
    _settings(database_url, monkeypatch)
    good = {
        "type": "Feature",
        "properties": {"kind": "site", "code": "GOOD-1"},
        "geometry": _square(),
    }
    features = [good]
    for props, _ in BAD_FEATURES:
        geometry = _line() if props["kind"] == "route" else _square()
        features.append({"type": "Feature", "properties": props, "geometry": geometry})
    bowtie = {
        "type": "Polygon",
        "coordinates": [
            [[114.06, 22.55], [114.07, 22.56], [114.07, 22.55], [114.06, 22.56], [114.06, 22.55]]
        ],
    }
    features.append(
        {
            "type": "Feature",
            "properties": {"kind": "site", "code": "BOWTIE", "name": "self-crossing"},
            "geometry": bowtie,
        }
    )
    features.append(
        {
            "type": "Feature",
            "properties": {"kind": "site", "code": "SWAP"},
            "geometry": _square(lon=22.55, lat=114.06),
        }
    )
    features.append(
        {
            "type": "Feature",
            "properties": {"kind": "site", "code": "FAR"},
            "geometry": _square(lon=2.35, lat=48.85),
        }
    )
    features.append(
        {
            "type": "Feature",
            "properties": {"kind": "route", "code": "ZERO", "width_m": 50},
            "geometry": {"type": "LineString", "coordinates": [[114.06, 22.55], [114.06, 22.55]]},
        }
    )
    features.append(dict(good))  # duplicate code
    path = tmp_path / "bad.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    result = _run(["import", str(path)])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    text = result.output
    for i, (props, message) in enumerate(BAD_FEATURES, start=1):
        assert f"feature {i} (code '{props['code']}')" in text
        assert message in text, message
    n = len(BAD_FEATURES)
    assert (
        f"feature {n + 1} (code 'BOWTIE', name 'self-crossing'): invalid polygon: "
        "Self-intersection" in text
    )
    assert f"feature {n + 2} (code 'SWAP'): invalid coordinates" in text and "swapped" in text
    assert f"feature {n + 3} (code 'FAR'): zone lies" in text
    assert f"feature {n + 4} (code 'ZERO'): route has zero length" in text
    assert f"feature {n + 5} (code 'GOOD-1'): code 'GOOD-1' also used by feature 0" in text
    assert f"{n + 5} bad feature(s), nothing imported" in text
    assert _count(db) == 0  # the good feature was not imported either


def test_unreadable_files_exit_non_zero_without_traceback(database_url, monkeypatch, tmp_path):
    _settings(database_url, monkeypatch)
    cases = {
        "broken.geojson": "{not json",
        "broken.gpx": "<gpx><rte><rtept lat='x' lon='1'/></rte>",
        "broken.kml": "<kml><Placemark>",
        "notes.txt": "hello",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = _run(["import", str(path)])
        assert result.exit_code == 1, (name, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert _run(["import", str(tmp_path / "missing.geojson")]).exit_code == 1


def test_kml_bad_extended_data_is_named(tmp_path):
    path = tmp_path / "bad.kml"
    path.write_text(
        (EXAMPLES / "route.kml")
        .read_text(encoding="utf-8")
        .replace("<value>40</value>", "<value>forty</value>"),
        encoding="utf-8",
    )
    with pytest.raises(ZoneImportError) as info:
        read_zones_file(path)
    assert "feature 0 (code 'ROUTE-KML-001'" in str(info.value)
    assert "width_m: 'forty' is not a number" in str(info.value)


def test_catalogue_reloads_on_change_without_restart(db, database_url, monkeypatch):
    settings = _settings(database_url, monkeypatch)
    catalog = ZoneCatalog(settings)
    assert catalog.refresh_if_changed(db) is True  # first load
    assert len(catalog.index) == 0
    assert catalog.refresh_if_changed(db) is False  # nothing changed: no reload

    upsert_zones(db, read_zones_file(EXAMPLES / "zones.geojson"))
    assert catalog.refresh_if_changed(db) is True
    first = catalog.index
    assert len(first) == 7
    lon, lat = np.array([114.062]), np.array([22.5415])
    t = int(dt.datetime(2026, 3, 4, 12, 0, tzinfo=TZ).timestamp())
    assert first.codes[first.classify(lon, lat, t).site_at()[0]] == "SITE-001"

    set_active(db, "SITE-001", False)
    assert catalog.refresh_if_changed(db) is True
    assert catalog.index.classify(lon, lat, t).site_at().tolist() == [-1]
    assert len(first) == 7  # the old index object is untouched (safe for a batch in flight)

    # a ban day is a change too: the school zone becomes banned all day on 2026-06-07
    school = np.array([114.0515]), np.array([22.5465])
    noon = int(dt.datetime(2026, 6, 7, 12, 0, tzinfo=TZ).timestamp())
    assert catalog.index.classify(*school, noon).restricted_active_at().tolist() == [-1]
    version = current_version(db)
    add_ban_day(db, dt.date(2026, 6, 7), zone_code="NOGO-SCHOOL-001", reason="gaokao")
    assert current_version(db) > version
    assert catalog.refresh_if_changed(db) is True
    idx = catalog.index
    assert idx.codes[idx.classify(*school, noon).restricted_active_at()[0]] == "NOGO-SCHOOL-001"
    with pytest.raises(ValueError, match="not a restricted zone"):
        add_ban_day(db, dt.date(2026, 6, 8), zone_code="SITE-001")


def test_catalogue_sees_a_change_made_by_another_connection(db, database_url, monkeypatch):
    from core.db import connect

    settings = _settings(database_url, monkeypatch)
    catalog = ZoneCatalog(settings, poll_interval_s=0)
    catalog.refresh_if_changed(db)
    other = connect(database_url)
    try:
        upsert_zones(other, read_zones_file(EXAMPLES / "route.kml"))
    finally:
        other.close()
    assert catalog.maybe_refresh(db) is True
    assert sorted(catalog.index.codes.tolist()) == ["NOGO-KML-001", "ROUTE-KML-001"]


def test_ban_day_cli(db, database_url, monkeypatch):
    _settings(database_url, monkeypatch)
    upsert_zones(db, read_zones_file(EXAMPLES / "zones.geojson"))
    result = _run(
        ["ban-day", "2026-06-07", "--start", "07:00", "--end", "18:00", "--reason", "exam"]
    )
    assert result.exit_code == 0, result.output
    result = _run(["ban-day", "2026-06-07", "--zone", "NOPE"])
    assert result.exit_code == 1 and "no zone with code 'NOPE'" in result.output


def test_export_function_matches_import_schema():
    found = read_zones_file(EXAMPLES / "zones.geojson")
    doc = export_geojson(found)
    props = doc["features"][2]["properties"]
    assert props["kind"] == "disposal" and props["opening_hours"][0]["start"] == "20:00"


def test_background_reload_keeps_serving_until_swapped(db, database_url, monkeypatch):
    settings = _settings(database_url, monkeypatch)
    catalog = ZoneCatalog(settings)
    catalog.refresh_if_changed(db)
    old = catalog.index
    stored = upsert_zones(db, read_zones_file(EXAMPLES / "zones.geojson"))
    assert stored["inserted"] == 7
    worker = catalog.refresh_in_background()
    assert worker is not None
    worker.join(timeout=60)
    assert catalog.index is not old and len(catalog.index) == 7
    assert catalog.refresh_in_background() is None  # up to date
    ids = [z.id for z in load_zones(db)]
    assert sorted(catalog.index.zone_index_by_id(ids).tolist()) == list(range(7))
    assert catalog.index.zone_index_by_id([10**9]).tolist() == [-1]
