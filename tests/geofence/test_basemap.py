"""The offline base layer: `muck zones import-basemap` (a bad feature named, the whole file
rejected, nothing stored), replacing a source, the simulated city's roads, and the map's
viewport query (classes by zoom, simplification, a bounded answer) through the web API."""

from __future__ import annotations

import json

from click.testing import CliRunner

from core.clicontext import MuckContext
from core.config import load_settings
from geofence.basemap import classes_at, features_in
from geofence.cli import zones as zones_cli

LON, LAT = 114.06, 22.55


def _line(cls, *points, **props):
    return {
        "type": "Feature",
        "properties": {"class": cls, **props},
        "geometry": {"type": "LineString", "coordinates": [list(p) for p in points]},
    }


def _square(cls, lon, lat, d, **props):
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    return {
        "type": "Feature",
        "properties": {"class": cls, **props},
        "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]},
    }


def _file(tmp_path, features, name="roads.geojson"):
    path = tmp_path / name
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}), "utf-8")
    return str(path)


def _run(database_url, monkeypatch, *args):
    monkeypatch.setenv("MUCK_DATABASE_URL", database_url)
    runner = CliRunner()
    return runner.invoke(zones_cli, list(args), obj=MuckContext(None), catch_exceptions=False)


def _count(db, source=None) -> int:
    with db.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM geofence_basemap WHERE %(s)s::text IS NULL OR source = %(s)s",
            {"s": source},
        )
        n = cur.fetchone()[0]
    db.commit()
    return n


GOOD = [
    _line("expressway", (LON - 0.05, LAT - 0.02), (LON + 0.05, LAT - 0.02), name="南环高速"),
    _line("other", (LON - 0.01, LAT), (LON, LAT + 0.001), (LON + 0.01, LAT), name="福华路"),
    _square("water", LON + 0.02, LAT + 0.02, 0.003, name="荔枝湖"),
]


def test_import_basemap_stores_and_replaces_its_source(db, database_url, monkeypatch, tmp_path):
    result = _run(database_url, monkeypatch, "import-basemap", _file(tmp_path, GOOD))
    assert result.exit_code == 0, result.output
    assert "3 features (1 expressway, 1 other, 1 water)" in result.output
    assert _count(db, "roads.geojson") == 3
    # the same source again replaces it; another source is kept beside it
    result = _run(database_url, monkeypatch, "import-basemap", _file(tmp_path, GOOD[:1]))
    assert result.exit_code == 0 and "3 replaced" in result.output
    other = _file(tmp_path, GOOD[2:], "lakes.geojson")
    assert (
        _run(database_url, monkeypatch, "import-basemap", other, "--source", "lakes").exit_code == 0
    )
    assert _count(db, "roads.geojson") == 1 and _count(db, "lakes") == 1
    dry = _run(database_url, monkeypatch, "import-basemap", other, "--source", "lakes", "--dry-run")
    assert "nothing stored" in dry.output and _count(db) == 2


def test_a_bad_feature_is_named_and_the_file_rejected(db, database_url, monkeypatch, tmp_path):
    _run(database_url, monkeypatch, "import-basemap", _file(tmp_path, GOOD))
    bad = [
        *GOOD,
        _line("motorway_link", (LON, LAT), (LON + 0.01, LAT), name="匝道"),  # 3: unknown class
        _square("other", LON, LAT, 0.001, name="广场"),  # 4: a road needs a line
        _line("other", (LAT, LON), (LAT + 0.01, LON), name="反了"),  # 5: lon/lat swapped
        {"type": "Feature", "properties": {"name": "无类"}, "geometry": GOOD[0]["geometry"]},
        _line("other", (LON + 5, LAT), (LON + 5.01, LAT), name="远方"),  # 7: 500 km away
    ]
    result = _run(database_url, monkeypatch, "import-basemap", _file(tmp_path, bad))
    assert result.exit_code == 1
    out = result.output
    assert "5 bad feature(s), nothing imported" in out
    assert "feature 3 (name '匝道'): unknown class 'motorway_link'" in out
    assert "feature 4 (name '广场'): class 'other' needs a LineString or MultiLineString" in out
    assert "feature 5 (name '反了'): invalid coordinates" in out
    assert "feature 6 (name '无类'): missing class" in out
    assert "feature 7 (name '远方'): feature lies" in out and "km from the city centre" in out
    assert _count(db) == 3  # the earlier import is untouched
    result = _run(database_url, monkeypatch, "import-basemap", str(tmp_path / "missing.geojson"))
    assert result.exit_code == 1 and "cannot read" in result.output
    (tmp_path / "broken.geojson").write_text("{not json", "utf-8")
    result = _run(database_url, monkeypatch, "import-basemap", str(tmp_path / "broken.geojson"))
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_the_simulated_city_installs_its_roads(db, settings):
    from simulators.city import generate_city, install_city

    city = generate_city(3, trucks=5)
    install_city(db, settings, city)
    install_city(db, settings, city)  # idempotent: the source is replaced
    assert _count(db, "simulated city 3") == len(city.roads.edges)
    with db.cursor() as cur:
        cur.execute("SELECT class, count(*) FROM geofence_basemap GROUP BY class")
        classes = dict(cur.fetchall())
    db.commit()
    assert set(classes) == {"expressway", "urban_expressway", "other"}
    xs = [lon for lon, _ in (city.lonlat(*p) for p in city.roads.nodes)]
    ys = [lat for _, lat in (city.lonlat(*p) for p in city.roads.nodes)]
    box = (min(xs), min(ys), max(xs), max(ys))
    everything, truncated = features_in(db, box, 16, limit=10_000)
    assert len(everything) == len(city.roads.edges) and not truncated
    # zoomed out: the main roads only
    main, _ = features_in(db, box, 10, limit=10_000)
    assert {f["properties"]["class"] for f in main} == {"expressway", "urban_expressway"}
    assert "other" not in classes_at(10) and "other" in classes_at(12)


def test_the_api_serves_the_viewport_bounded_and_simplified(db, database_url, monkeypatch):
    from geofence.basemap import BasemapFeature, replace_basemap
    from tests.web.test_dashboard import add_user, close_app, login, make_app, web_settings

    add_user(db, "watcher", "supervisor")
    # a wiggly street of 2,000 vertices and 50 short streets
    wiggle = [(LON - 0.02 + i * 2e-5, LAT + (1e-6 if i % 2 else 0.0)) for i in range(2000)]
    features = [
        BasemapFeature(
            "other",
            "长街",
            {"type": "LineString", "coordinates": [list(p) for p in wiggle]},
            (wiggle[0][0], LAT, wiggle[-1][0], LAT + 1e-6),
        )
    ]
    for k in range(50):
        y = LAT - 0.01 - k * 1e-3
        features.append(
            BasemapFeature(
                "other",
                None,
                {"type": "LineString", "coordinates": [[LON, y], [LON + 0.005, y]]},
                (LON, y, LON + 0.005, y),
            )
        )
    features.append(
        BasemapFeature(
            "expressway",
            "快速路",
            {"type": "LineString", "coordinates": [[LON - 0.1, LAT], [LON + 0.1, LAT]]},
            (LON - 0.1, LAT, LON + 0.1, LAT),
        )
    )
    replace_basemap(db, features, "test")
    app = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, basemap_max_features=20))
    try:
        client = app.test_client()
        login(client, "watcher")
        box = f"{LON - 0.05},{LAT - 0.1},{LON + 0.05},{LAT + 0.05}"
        data = client.get(f"/api/v1/basemap?bbox={box}&zoom=16").get_json()
        assert data["type"] == "FeatureCollection" and data["truncated"] is True
        assert len(data["features"]) == 20  # web.basemap_max_features
        assert data["features"][0]["properties"] == {"class": "expressway", "name": "快速路"}
        street = next(f for f in data["features"] if f["properties"]["name"] == "长街")
        assert len(street["geometry"]["coordinates"]) < 50  # 1 µ° wiggles are below a pixel
        # a viewport away from the streets gets the expressway only
        far = f"{LON + 0.06},{LAT - 0.001},{LON + 0.08},{LAT + 0.001}"
        names = [
            f["properties"]["name"]
            for f in client.get(f"/api/v1/basemap?bbox={far}&zoom=16").get_json()["features"]
        ]
        assert names == ["快速路"]
        # zoomed out: no ordinary streets
        data = client.get(f"/api/v1/basemap?bbox={box}&zoom=9").get_json()
        assert [f["properties"]["class"] for f in data["features"]] == ["expressway"]
        # GCJ-02 display: coordinates shifted by a few hundred metres
        wide = f"{LON + 0.06},{LAT - 0.01},{LON + 0.08},{LAT + 0.01}"  # in GCJ-02 too
        shifted = client.get(f"/api/v1/basemap?bbox={wide}&zoom=16&crs=gcj02").get_json()
        lon0 = shifted["features"][0]["geometry"]["coordinates"][0][0]
        assert shifted["crs"] == "gcj02" and abs(lon0 - (LON - 0.1)) > 1e-3
        for bad in ("", "1,2,3", "a,b,c,d", "114.1,22.5,114.0,22.6", "0,0,200,1", "nan,0,1,1"):
            resp = client.get(f"/api/v1/basemap?bbox={bad}&zoom=12")
            assert resp.status_code == 400 and "bbox" in resp.get_json()["error"], bad
        assert client.get(f"/api/v1/basemap?bbox={box}&zoom=40").status_code == 400
        assert app.test_client().get(f"/api/v1/basemap?bbox={box}").status_code == 401
    finally:
        close_app(app)


def test_settings_default_is_documented():
    assert load_settings()["web"]["basemap_max_features"] == 3000
