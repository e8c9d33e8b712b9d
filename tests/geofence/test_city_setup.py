"""A city other than the simulated one moves in: the centre and projection from its zones
(`muck city init`), the error that says how, and the forms of zone properties people write."""

from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from core.config import load_settings, write_city_settings
from geofence.city import gauss_kruger_zone, propose_city
from geofence.io import ZoneImportError, parse_zones, read_geojson
from geofence.model import ZoneError, zone_from_properties

# Chengdu, about 1,300 km from the default (Shenzhen) centre.
CHENGDU = [
    {
        "type": "Feature",
        "properties": {"kind": "site", "id": "CD-SITE-1", "name": "天府工地"},
        "geometry": {
            "type": "Polygon",
            "coordinates": [[[104.0, 30.6], [104.01, 30.6], [104.01, 30.61], [104.0, 30.6]]],
        },
    },
    {
        "type": "Feature",
        "properties": {
            "kind": "disposal",
            "code": "CD-DISP-1",
            "opening_hours": [["07:00", "09:00"], "21:00-05:00"],
        },
        "geometry": {"type": "Point", "coordinates": [104.2, 30.7]},
        "radius_m": 200,
    },
    {
        "type": "Feature",
        "properties": {"kind": "route", "code": "CD-R1", "corridor_width_m": 100},
        "geometry": {"type": "LineString", "coordinates": [[104.0, 30.6], [104.2, 30.7]]},
    },
]


def _file(tmp_path, features=CHENGDU):
    path = tmp_path / "chengdu.geojson"
    for f in features:
        f.pop("radius_m", None)
        if f["geometry"]["type"] == "Point":
            f["properties"]["radius_m"] = 200
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def test_far_zones_are_refused_with_the_setting_and_the_command(tmp_path):
    s = load_settings()
    with pytest.raises(ZoneImportError) as info:
        parse_zones(
            read_geojson(_file(tmp_path).read_text()),
            center=(s.city["center_lon"], s.city["center_lat"]),
            max_distance_km=s["geofence"]["max_zone_distance_km"],
        )
    message = info.value.errors[0]
    assert "city.center_lon and city.center_lat" in message
    assert "muck city init --from-zones FILE" in message
    assert "$MUCK_CONFIG" in message


def test_the_proposal_centres_on_the_zones_with_the_gauss_kruger_zone(tmp_path):
    zones = parse_zones(read_geojson(_file(tmp_path).read_text()))
    proposal = propose_city(zones)
    assert (proposal.center_lon, proposal.center_lat) == (104.1, 30.65)
    assert proposal.projection == "EPSG:4544"  # CGCS2000 / 3-degree Gauss-Kruger CM 105E
    assert "105E" in proposal.projection_name
    assert 10 < proposal.farthest_km < 15
    assert gauss_kruger_zone(114.06) == "EPSG:4547"  # Shenzhen: CM 114E
    assert gauss_kruger_zone(10.0) == ""


def test_city_init_writes_the_settings_and_the_zones_then_import(tmp_path, monkeypatch):
    from muck.cli import _register_subcommands, cli

    _register_subcommands()
    monkeypatch.delenv("MUCK_CONFIG", raising=False)
    monkeypatch.delenv("MUCK_DATABASE_URL", raising=False)
    zones = _file(tmp_path)
    config = tmp_path / "city.toml"
    config.write_text(
        '# 成都\n[city]\nname = "成都市"\ncenter_lon = 114.06\n\n[ingest]\nbatch_size = 500\n'
    )
    runner = CliRunner()
    refused = runner.invoke(cli, ["zones", "import", str(zones), "--dry-run"])
    assert refused.exit_code == 1
    assert f"muck city init --from-zones {zones} --write city.toml" in refused.output
    result = runner.invoke(
        cli, ["city", "init", "--from-zones", str(zones), "--write", str(config)]
    )
    assert result.exit_code == 0, result.output
    written = tomllib.loads(config.read_text())
    assert written["city"] == {
        "name": "成都市",
        "center_lon": 104.1,
        "center_lat": 30.65,
        "projection": "EPSG:4544",
    }
    assert written["ingest"] == {"batch_size": 500}
    assert config.read_text().startswith("# 成都\n")
    ok = runner.invoke(cli, ["--config", str(config), "zones", "import", str(zones), "--dry-run"])
    assert ok.exit_code == 0, ok.output
    assert "3 valid zones" in ok.output


def test_write_city_settings_creates_the_file(tmp_path):
    path = tmp_path / "new.toml"
    write_city_settings(path, {"center_lon": 120.5, "center_lat": 31.3, "projection": ""})
    assert tomllib.loads(path.read_text())["city"]["center_lat"] == 31.3


def _zone(props, geometry=None):
    return zone_from_properties(
        props, geometry or {"type": "Point", "coordinates": [114.06, 22.55]}
    )


def test_zone_property_forms():
    assert _zone({"kind": "site", "id": "S1", "radius_m": 50}).code == "S1"
    with pytest.raises(ZoneError, match="code 'S1' and id 'S2' differ"):
        _zone({"kind": "site", "id": "S2", "code": "S1", "radius_m": 50})
    disposal = _zone(
        {"kind": "disposal", "code": "D1", "radius_m": 50, "opening_hours": [["07:00", "09:00"]]}
    )
    assert disposal.attributes["opening_hours"] == [
        {"days": [1, 2, 3, 4, 5, 6, 7], "start": "07:00", "end": "09:00"}
    ]
    same = _zone(
        {
            "kind": "disposal",
            "code": "D1",
            "radius_m": 50,
            "opening_hours": [{"start": "07:00", "end": "09:00"}],
        }
    )
    assert same.attributes == disposal.attributes
    with pytest.raises(ZoneError) as info:
        _zone({"kind": "disposal", "code": "D2", "radius_m": 50, "opening_hours": [7, 9]})
    assert '[["07:00", "09:00"]]' in str(info.value) and '"07:00-09:00"' in str(info.value)
    line = {"type": "LineString", "coordinates": [[114.06, 22.55], [114.07, 22.56]]}
    full = _zone({"kind": "route", "code": "R1", "corridor_width_m": 100}, line)
    half = _zone({"kind": "route", "code": "R1", "width_m": 50}, line)
    assert full.width_m == half.width_m == 50.0
    with pytest.raises(ZoneError, match="they disagree"):
        _zone({"kind": "route", "code": "R1", "width_m": 100, "corridor_width_m": 100}, line)
    with pytest.raises(ZoneError, match="half the corridor's width"):
        _zone({"kind": "route", "code": "R1"}, line)
