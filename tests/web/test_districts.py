# ruff: noqa: F811  (pytest fixtures imported from tests.web.test_dashboard)
"""Districts (行政区): import and validation, where violations happened, the district filter of
the violations list and API, /api/v1/districts, and bad district input (never a 500)."""

from __future__ import annotations

import copy
import io
import json

import pytest

from compliance.districts import fill_missing_districts
from geofence.io import ZoneImportError, parse_zones, read_geojson
from geofence.store import district_at, load_districts, load_zones, upsert_zones
from tests.web.test_dashboard import _post_form, app, as_role, users  # noqa: F401
from tests.web.test_violations import DISTRICTS, insert_violation, world  # noqa: F401


def _parse(doc: dict):
    return parse_zones(read_geojson(json.dumps(doc)))


def _feature(**props) -> dict:
    base = {"kind": "district", "code": "440304", "name": "福田区"}
    geometry = props.pop(
        "geometry",
        {
            "type": "Polygon",
            "coordinates": [[[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.5]]],
        },
    )
    base.update(props)
    return {"type": "Feature", "properties": base, "geometry": geometry}


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"code": "4403"}, "6-digit administrative division code"),
        ({"code": "44030A"}, "6-digit administrative division code"),
        ({"code": "４４０３０４"}, "6-digit"),  # full-width digits are not a code
        ({"name": ""}, "needs a name"),
        ({"name": None}, "needs a name"),
        ({"valid_from": "2026-01-01"}, "unknown properties ['valid_from']"),
        ({"district": "福田区"}, "unknown properties ['district']"),
        ({"radius_m": 100}, "unknown properties ['radius_m']"),
        (
            {"geometry": {"type": "Point", "coordinates": [114.05, 22.55]}},
            "needs a Polygon or MultiPolygon",
        ),
        (
            {"geometry": {"type": "LineString", "coordinates": [[114.0, 22.5], [114.1, 22.6]]}},
            "needs a Polygon or MultiPolygon",
        ),
        (
            {
                "geometry": {
                    "type": "Polygon",
                    "coordinates": [
                        [[114.0, 22.5], [114.1, 22.6], [114.1, 22.5], [114.0, 22.6], [114.0, 22.5]]
                    ],
                }
            },
            "invalid polygon",
        ),
    ],
)
def test_bad_districts_are_refused_with_a_message(props, message):
    with pytest.raises(ZoneImportError) as err:
        _parse({"type": "FeatureCollection", "features": [_feature(**props)]})
    assert message in str(err.value)
    assert "feature 0" in str(err.value)


def test_districts_import_into_their_own_table(db):
    zones = _parse(DISTRICTS)
    assert {z.kind for z in zones} == {"district"}
    counts = upsert_zones(db, zones)
    assert counts == {"inserted": 2, "updated": 0}
    assert load_zones(db) == []  # never in the zone index the rules use
    found = {d["code"]: d["name"] for d in load_districts(db)}
    assert found == {"440304": "福田区", "440303": "罗湖区"}
    assert district_at(db, 114.06, 22.55) == "440304"
    assert district_at(db, 114.12, 22.55) == "440303"
    assert district_at(db, 114.09, 22.55) is None
    # re-import with a new boundary: updated in place, the old rings gone
    moved = copy.deepcopy(DISTRICTS)
    moved["features"][0]["geometry"]["coordinates"][0] = [
        [114.3, 22.5],
        [114.4, 22.5],
        [114.4, 22.6],
        [114.3, 22.5],
    ]
    assert upsert_zones(db, _parse(moved)) == {"inserted": 0, "updated": 2}
    assert district_at(db, 114.06, 22.55) is None
    db.rollback()


def test_a_hole_is_not_in_the_district(db):
    outer = [[114.0, 22.5], [114.1, 22.5], [114.1, 22.6], [114.0, 22.6], [114.0, 22.5]]
    hole = [[114.04, 22.54], [114.06, 22.54], [114.06, 22.56], [114.04, 22.56], [114.04, 22.54]]
    doc = _feature(geometry={"type": "Polygon", "coordinates": [outer, hole]})
    upsert_zones(db, _parse(doc))
    assert district_at(db, 114.02, 22.52) == "440304"
    assert district_at(db, 114.05, 22.55) is None
    db.rollback()


def test_violation_gets_the_district_where_it_happened(db, world):
    with db.cursor() as cur:
        cur.execute("SELECT id, district_code FROM violations ORDER BY id")
        codes = dict(cur.fetchall())
    db.rollback()
    assert codes[world["v"]["zone"]] == "440304"
    assert {c for vid, c in codes.items() if vid != world["v"]["zone"]} == {"440303"}


def test_districts_imported_later_reach_earlier_violations(db, world):
    with db.cursor() as cur:
        cur.execute("UPDATE violations SET lat = 22.70, lon = 114.30")  # outside both
        cur.execute("SELECT count(*) FROM violations WHERE district_code IS NULL")
        assert cur.fetchone()[0] == 6
    db.commit()
    later = _feature(
        code="440306",
        name="宝安区",
        geometry={
            "type": "Polygon",
            "coordinates": [[[114.2, 22.6], [114.4, 22.6], [114.4, 22.8], [114.2, 22.6]]],
        },
    )
    upsert_zones(db, _parse(later))
    assert fill_missing_districts(db) == 6
    with db.cursor() as cur:
        cur.execute("SELECT DISTINCT district_code FROM violations")
        assert cur.fetchall() == [("440306",)]
    db.rollback()
    assert fill_missing_districts(db) == 0  # districts unchanged since: nothing to visit


def test_violation_list_filters_by_district_code_or_name(as_role, world):
    client = as_role("enforcement")
    v = world["v"]
    ids = lambda resp: {i["id"] for i in resp.get_json()["items"]}  # noqa: E731
    assert ids(client.get("/api/v1/violations?district=440304")) == {v["zone"]}
    assert ids(client.get("/api/v1/violations?district=福田区")) == {v["zone"]}
    assert len(ids(client.get("/api/v1/violations?district=罗湖区"))) == 5
    item = client.get("/api/v1/violations?district=440304").get_json()["items"][0]
    assert item["district"] == "福田区"
    html = client.get("/violations/?district=440303").get_data(as_text=True)
    assert html.count("data-id=") == 5
    assert '<option value="440303" selected>罗湖区 (440303)</option>' in html
    one = client.get(f"/api/v1/violations/{v['zone']}").get_json()
    assert one["district_code"] == "440304"
    assert "福田区" in client.get(f"/violations/{v['zone']}").get_data(as_text=True)
    resp = client.get("/violations/export.csv?district=440304")
    assert resp.status_code == 200 and resp.get_data(as_text=True).count("\n") == 2


@pytest.mark.parametrize("value", ["999999", "朝阳区", "x" * 101, "440304' OR '1'='1"])
def test_bad_district_filter_is_a_clear_400(as_role, world, value):
    client = as_role("enforcement")
    for url in (
        "/api/v1/violations?district=",
        "/violations/?district=",
        "/violations/export.csv?district=",
        "/violations/export.xlsx?district=",
    ):
        resp = client.get(url + value)
        assert resp.status_code == 400, url
        text = resp.get_data(as_text=True)
        assert "district" in text
    page = client.get("/violations/?district=朝阳区").get_data(as_text=True)
    assert 'data-field="district"' in page and "unknown district" in page


def test_pages_deeper_than_the_bound_are_refused(as_role, world):
    client = as_role("supervisor")
    resp = client.get("/api/v1/violations?page=10000&per_page=500")
    assert resp.status_code == 400 and "narrow the filter" in resp.get_json()["error"]
    resp = client.get("/violations/?page=100000")
    assert resp.status_code == 400 and 'data-field="page"' in resp.get_data(as_text=True)


def test_list_with_a_next_page_renders(as_role, db, world):
    """The pager's "next" link (a 500 before: the macro shadowed gettext)."""
    t1 = world["trucks"][0]
    a = world["companies"][0]
    import datetime as dt

    from tests.web.test_violations import T0

    for i in range(60):
        insert_violation(db, t1, a, "speeding", start=T0 - dt.timedelta(days=10, minutes=i))
    client = as_role("supervisor")
    resp = client.get("/violations/")
    assert resp.status_code == 200 and 'rel="next"' in resp.get_data(as_text=True)
    assert client.get("/violations/?page=2").status_code == 200


def test_districts_api_roles_crs_and_bad_input(app, db, users, world):
    from geofence.coords import wgs84_to_gcj02
    from tests.web.test_dashboard import login

    anonymous = app.test_client()
    assert anonymous.get("/api/v1/districts").status_code == 401
    for role, status in (
        ("supervisor", 200),
        ("enforcement", 200),
        ("admin", 200),
        ("credit", 403),
    ):
        client = app.test_client()
        login(client, role)
        assert client.get("/api/v1/districts").status_code == status, role
    client = app.test_client()
    login(client, "supervisor")
    wgs = client.get("/api/v1/districts").get_json()
    assert [f["id"] for f in wgs["features"]] == ["440303", "440304"]
    assert wgs["features"][1]["properties"] == {"code": "440304", "name": "福田区"}
    gcj = client.get("/api/v1/districts?crs=gcj02").get_json()
    x, y = wgs["features"][1]["geometry"]["coordinates"][0][0]
    gx, gy = wgs84_to_gcj02(x, y)
    assert gcj["features"][1]["geometry"]["coordinates"][0][0] == pytest.approx(
        [float(gx), float(gy)]
    )
    resp = client.get("/api/v1/districts?crs=mercator")
    assert resp.status_code == 400 and "crs" in resp.get_json()["error"]


def test_district_upload_through_the_registry(as_role, db, users):
    client = as_role("admin")
    bad = {"type": "FeatureCollection", "features": [_feature(code="12")]}
    resp = _post_form(
        client,
        "/registry/zones",
        {
            "file": (io.BytesIO(json.dumps(bad).encode()), "districts.geojson"),
            "crs": "wgs84",
            "fmt": "",
            "kind": "",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 400 and "6-digit" in resp.get_data(as_text=True)
    resp = _post_form(
        client,
        "/registry/zones",
        {
            "file": (io.BytesIO(json.dumps(DISTRICTS).encode()), "districts.geojson"),
            "crs": "wgs84",
            "fmt": "",
            "kind": "",
        },
        content_type="multipart/form-data",
    )
    assert resp.status_code == 302
    assert [f["id"] for f in client.get("/api/v1/districts").get_json()["features"]] == [
        "440303",
        "440304",
    ]


def test_counts_are_exact_up_to_the_cap_then_per_kind_lower_bounds(db, world, monkeypatch):
    from web import violation_queries as vq

    with db.cursor() as cur:
        exact = vq.count_by_kind(cur, vq.Filters())
        assert exact.exact and exact.total == 6 and exact.by_kind["speeding"] == 2
        capped = vq.count_by_kind(cur, vq.Filters(), cap=1)
        assert not capped.exact and capped.capped == {"speeding"}
        assert capped.by_kind["speeding"] == 1 and capped.by_kind["restricted_zone"] == 1
        assert capped.total == 5  # a lower bound: one per kind here
        one_kind = vq.count_by_kind(cur, vq.Filters(kind="speeding"), cap=1)
        assert one_kind.by_kind == {"speeding": 1} and one_kind.capped == {"speeding"}
    db.rollback()


def test_capped_counts_in_the_api_and_the_page(as_role, world, monkeypatch):
    from web import violation_queries as vq

    monkeypatch.setattr(vq, "COUNT_CAP", 1)
    client = as_role("supervisor")
    body = client.get("/api/v1/violations?per_page=2").get_json()
    assert body["total_exact"] is False and body["counts_capped"] == ["speeding"]
    assert body["next"] and len(body["items"]) == 2
    html = client.get("/violations/").get_data(as_text=True)
    assert "1+" in html
