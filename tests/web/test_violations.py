# ruff: noqa: F811  (pytest fixtures imported from tests.web.test_dashboard)
"""Violation and black-truck pages, exports and API through Flask's test client.

Violations are inserted directly into `violations` (trucks and companies through
registry.service), as the rules would leave them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest

from geofence.io import parse_zones, read_geojson
from geofence.store import upsert_zones
from registry.service import upsert_company, upsert_truck
from telemetry.partitions import ensure_days
from tests.web.test_dashboard import ROLES, app, as_role, csrf_of, users  # noqa: F401
from web.users import create_token

T0 = dt.datetime(2026, 11, 23, 0, 30, tzinfo=dt.UTC)  # 08:30 in Shenzhen


def insert_violation(db, truck_id, company_id, kind="speeding", *, start=T0, **kw) -> int:
    # The truck's fixes around the episode, in positions (where the violation page reads
    # them until its evidence is final).
    fixes = kw.pop("fixes", 6)
    row = {
        "stream": "over_limit",
        "ended_at": start + dt.timedelta(minutes=1),
        "worst_value": 72.5,
        "worst_unit": "km/h",
        "severity": "minor",
        "permit_no": "深建渣准〔2026〕0123号",
        "zone_code": None,
        "points": 3,
        "legal_basis": "《深圳市建筑废弃物管理办法》第三十条",
        "rule_params": {"limit_kmh": 60, "min_duration_s": 30},
        "status": "new",
        "updated_at": None,  # an hour ago
        "lat": 22.55,
        "lon": 114.12,  # in 罗湖区 (see `world`)
        **kw,
    }
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO violations (truck_id, company_id, kind, stream, started_at, ended_at,
                   worst_value, worst_unit, severity, permit_no, zone_code, lat, lon, points,
                   legal_basis, rule_params, status, updated_at)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                       %s::jsonb, %s, COALESCE(%s, now() - interval '1 hour'))
               RETURNING id""",
            (
                truck_id,
                company_id,
                kind,
                row["stream"],
                start,
                row["ended_at"],
                row["worst_value"],
                row["worst_unit"],
                row["severity"],
                row["permit_no"],
                row["zone_code"],
                row["lat"],
                row["lon"],
                row["points"],
                row["legal_basis"],
                json.dumps(row["rule_params"]),
                row["status"],
                row["updated_at"],
            ),
        )
        vid = cur.fetchone()[0]
        times = [start + dt.timedelta(seconds=30 * i - 60) for i in range(fixes)]
        ensure_days(cur, {t.date() for t in times})
        cur.executemany(
            """INSERT INTO positions (device_id, fix_time, received_at, truck_id, lat, lon,
                   speed_kmh, heading, lid, lift, load, acc, alarms)
               VALUES ('DEV1', %s, %s, %s, %s, 114.06, %s, 0, 'open', 'down', 'full', true,
                       '{}') ON CONFLICT DO NOTHING""",
            [(t, t, truck_id, 22.55 + 0.001 * i, 70.0 + i) for i, t in enumerate(times)],
        )
        cur.execute(
            "INSERT INTO violation_events (violation_id, actor, action) VALUES (%s, 'system', 'detected')",
            (vid,),
        )
    db.commit()
    return vid


def _square(lon: float, lat: float, d: float = 0.02) -> dict:
    ring = [[lon - d, lat - d], [lon + d, lat - d], [lon + d, lat + d], [lon - d, lat + d]]
    return {"type": "Polygon", "coordinates": [[*ring, ring[0]]]}


DISTRICTS = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"kind": "district", "code": "440304", "name": "福田区"},
            "geometry": _square(114.06, 22.55),
        },
        {
            "type": "Feature",
            "properties": {"kind": "行政区", "code": "440303", "name": "罗湖区"},
            "geometry": _square(114.12, 22.55),
        },
    ],
}


@pytest.fixture
def world(db):
    """Two companies, three trucks, a zone in 福田区 and six violations."""
    with db.cursor() as cur:
        a = upsert_company(cur, "深圳市甲运输有限公司", "91440300MA5DC0L4X0")
        b = upsert_company(cur, "深圳市乙运输有限公司", None)
        t1 = upsert_truck(cur, "粤B10001", a)
        t2 = upsert_truck(cur, "粤B10002", a)
        t3 = upsert_truck(cur, "粤B20001", b)
        cur.execute(
            """INSERT INTO geofence_zones (code, kind, name, district, geometry)
               VALUES ('RZ-1', 'restricted', '禁区一', '福田区',
                       '{"type": "Point", "coordinates": [114.06, 22.55]}')"""
        )
    db.commit()
    # Two districts through the import path; the violation in RZ-1 happened in 福田区, the
    # others in 罗湖区.
    upsert_zones(db, parse_zones(read_geojson(json.dumps(DISTRICTS))))
    v = {
        "speed1": insert_violation(db, t1, a, "speeding"),
        "speed2": insert_violation(db, t2, a, "speeding", start=T0 + dt.timedelta(hours=2)),
        "zone": insert_violation(
            db,
            t3,
            b,
            "restricted_zone",
            zone_code="RZ-1",
            severity="serious",
            points=10,
            lon=114.06,
        ),
        "dump": insert_violation(
            db, t3, b, "illegal_dumping", start=T0 - dt.timedelta(days=1), status="confirmed"
        ),
        "old": insert_violation(db, t1, a, "unsealed_transport", start=T0 - dt.timedelta(days=3)),
        "dark": insert_violation(
            db, t2, a, "going_dark", start=T0 + dt.timedelta(hours=3), ended_at=None
        ),
    }
    return {"companies": (a, b), "trucks": (t1, t2, t3), "v": v}


def _ids(resp) -> set[int]:
    return {item["id"] for item in resp.get_json()["items"]}


def _audit(db, action):
    with db.cursor() as cur:
        cur.execute(
            "SELECT username, entity_id, before, after FROM audit_log WHERE action = %s ORDER BY id",
            (action,),
        )
        return cur.fetchall()


def _status(db, vid):
    with db.cursor() as cur:
        cur.execute("SELECT status, decision_no FROM violations WHERE id = %s", (vid,))
        row = cur.fetchone()
    db.rollback()
    return row


def _events(db, vid):
    with db.cursor() as cur:
        cur.execute(
            "SELECT actor, action, note FROM violation_events WHERE violation_id = %s ORDER BY id",
            (vid,),
        )
        rows = cur.fetchall()
    db.rollback()
    return rows


# ---- list, filters, sort -----------------------------------------------------------------


def test_list_page_filters_counts_and_chinese_labels(as_role, world):
    client = as_role("supervisor")
    resp = client.get("/violations/")
    html = resp.get_data(as_text=True)
    assert resp.status_code == 200
    for label in (
        "超速",
        "闯禁区",
        "乱倒乱卸",
        "未密闭运输",
        "不在线/屏蔽定位",
        "待审核",
        "已确认",
    ):
        assert label in html, label
    assert 'data-kind="speeding"' in html and "<b>2</b>" in html  # counts by kind
    assert "export-csv" not in html  # supervisors do not export
    # time range in local time: 08:00-09:00 +08:00 holds only the first speeding (08:30)
    html = client.get("/violations/?from=2026-11-23T08:00&to=2026-11-23T09:00").get_data(
        as_text=True
    )
    assert f'data-id="{world["v"]["speed1"]}"' in html
    assert f'data-id="{world["v"]["speed2"]}"' not in html
    html = client.get("/violations/?district=福田区").get_data(as_text=True)
    assert f'data-id="{world["v"]["zone"]}"' in html and html.count("data-id=") == 1


def test_api_filters_and_sort(as_role, world):
    client = as_role("enforcement")
    v = world["v"]
    assert client.get("/api/v1/violations").get_json()["total"] == 6
    assert _ids(client.get("/api/v1/violations?kind=speeding")) == {v["speed1"], v["speed2"]}
    assert _ids(client.get("/api/v1/violations?status=confirmed")) == {v["dump"]}
    assert _ids(client.get("/api/v1/violations?severity=serious")) == {v["zone"]}
    assert _ids(client.get("/api/v1/violations?company=乙运输")) == {v["zone"], v["dump"]}
    assert _ids(client.get("/api/v1/violations?company=91440300MA5DC0L4X0")) == {
        v["speed1"],
        v["speed2"],
        v["old"],
        v["dark"],
    }
    cid = world["companies"][1]
    assert _ids(client.get(f"/api/v1/violations?company_id={cid}")) == {v["zone"], v["dump"]}
    assert _ids(client.get("/api/v1/violations?plate=粤b 20001")) == {v["zone"], v["dump"]}
    assert _ids(client.get("/api/v1/violations?zone=RZ-1")) == {v["zone"]}
    assert _ids(client.get("/api/v1/violations?district=福田区")) == {v["zone"]}
    assert _ids(client.get("/api/v1/violations?plate=%25")) == set()  # wildcard escaped
    body = client.get("/api/v1/violations?from=2026-11-22T00:00%2B08:00&to=2026-11-24").get_json()
    assert {i["id"] for i in body["items"]} == {
        v["speed1"],
        v["speed2"],
        v["zone"],
        v["dark"],
        v["dump"],
    }
    assert body["counts_by_kind"] == {
        "speeding": 2,
        "restricted_zone": 1,
        "going_dark": 1,
        "illegal_dumping": 1,
    }
    items = client.get("/api/v1/violations?sort=started_at&dir=asc").get_json()["items"]
    assert [i["id"] for i in items][:2] == [v["old"], v["dump"]]
    items = client.get("/api/v1/violations?sort=points").get_json()["items"]
    assert items[0]["id"] == v["zone"]
    page = client.get("/api/v1/violations?per_page=4").get_json()
    assert len(page["items"]) == 4 and page["pages"] == 2 and page["next"]
    assert len(client.get(page["next"]).get_json()["items"]) == 2


BAD = [
    "from=yesterday",
    "from=2026-13-45T99:00",
    "from=2026-11-24T00:00&to=2026-11-23T00:00",
    "kind=parking",
    "status=open",
    "severity=huge",
    "company_id=abc",
    "company_id=-1",
    "sort=started_at;drop table violations",
    "dir=up",
    "plate=" + "粤" * 30,
    "page=0",
    "per_page=100000",
]


@pytest.mark.parametrize("query", BAD)
def test_bad_filters_are_400_with_a_message(as_role, world, query):
    client = as_role("enforcement")
    resp = client.get(f"/api/v1/violations?{query}")
    assert resp.status_code == 400, query
    assert resp.get_json()["error"], query
    if not query.startswith(("page", "per_page")):
        page = client.get(f"/violations/?{query}")
        assert page.status_code == 400, query
        field = query.split("=")[0]
        field = "to" if "to=" in query else field
        assert f'class="error" data-field="{field}"' in page.get_data(as_text=True), query
        assert client.get(f"/violations/export.csv?{query}").status_code == 400


# ---- one violation and its actions ---------------------------------------------------------


def test_violation_page_shows_the_evidence(as_role, world):
    vid = world["v"]["speed1"]
    html = as_role("supervisor").get(f"/violations/{vid}").get_data(as_text=True)
    assert "深建渣准〔2026〕0123号" in html and "第三十条" in html
    assert "limit_kmh" in html and "min_duration_s" in html
    assert "2026-11-23 08:29:30" in html  # first evidence fix, in local time
    assert html.count('class="in-episode"') == 3  # 08:30:00 .. 08:31:00
    assert '"start": 2' in html and '"end": 4' in html  # marked on the map
    assert "detected" in html and "vendor/leaflet/leaflet.js" in html
    assert 'id="actions"' not in html  # supervisors only view
    html = as_role("enforcement").get(f"/violations/{vid}").get_data(as_text=True)
    assert 'id="do-confirm"' in html and 'id="do-dismiss"' in html
    assert 'id="do-close"' not in html
    assert as_role("enforcement").get("/violations/999999").status_code == 404


def test_violation_map_honours_gcj02_tiles(db, database_url, users, world):  # noqa: F811
    from geofence.coords import wgs84_to_gcj02
    from tests.web.test_dashboard import close_app, login, make_app, web_settings

    settings = web_settings(database_url, tile_crs="gcj02")
    gcj_app = make_app(database_url, MUCK_SETTINGS=settings)
    client = gcj_app.test_client()
    login(client, "supervisor")
    html = client.get(f"/violations/{world['v']['speed1']}").get_data(as_text=True)
    lon, _lat = wgs84_to_gcj02(114.06, 22.55)
    import re

    shown = re.search(r'"lon": \[([0-9.]+)', html)
    assert shown, html[html.find("window.MUCK") :][:500]
    assert float(shown.group(1)) == pytest.approx(float(lon), abs=1e-6)
    close_app(gcj_app)


def _act(client, vid, **data):
    token = csrf_of(client.get(f"/violations/{vid}").get_data(as_text=True))
    return client.post(f"/violations/{vid}/action", data={"csrf_token": token, **data})


def test_review_actions_change_status_with_events_and_audit(as_role, db, world):
    client = as_role("enforcement")
    vid = world["v"]["speed1"]
    resp = _act(client, vid, action="confirm", note="轨迹清楚")
    assert resp.status_code == 302
    assert _status(db, vid) == ("confirmed", None)
    # opening a case without the decision number: refused, message next to the form
    resp = _act(client, vid, action="open_case", decision_no=" ")
    assert resp.status_code == 400
    assert 'data-field="open_case"' in resp.get_data(as_text=True)
    assert _status(db, vid) == ("confirmed", None)
    # open_case now makes a one-violation case (credit/cases.py), decided with the number
    resp = _act(client, vid, action="open_case", decision_no="深城管罚决字〔2026〕第0001号")
    assert resp.status_code == 302
    assert _status(db, vid) == ("case_opened", "深城管罚决字〔2026〕第0001号")
    with db.cursor() as cur:
        cur.execute(
            """SELECT k.status, k.decision_no, k.created_by FROM credit_cases k
               JOIN credit_case_violations cv ON cv.case_id = k.id WHERE cv.violation_id = %s""",
            (vid,),
        )
        assert cur.fetchall() == [("decided", "深城管罚决字〔2026〕第0001号", "enforcement")]
    db.rollback()
    # a refused transition: dismissing a violation in a case names the case
    resp = _act(client, vid, action="dismiss", note="误报")
    assert resp.status_code == 400
    html = resp.get_data(as_text=True)
    assert f"cannot dismiss violation {vid}: it is in case 示城管立〔" in html
    assert "withdraw the case first" in html
    assert 'data-field="dismiss"' in html
    assert _act(client, vid, action="close").status_code == 302
    assert _status(db, vid)[0] == "closed"
    assert [a for _, a, _ in _events(db, vid)] == [
        "detected",
        "confirm",
        "open_case",
        "decision",
        "close",
    ]
    assert _events(db, vid)[1] == ("enforcement", "confirm", "轨迹清楚")
    audit = _audit(db, "violation.confirm")
    assert audit == [
        (
            "enforcement",
            str(vid),
            {"status": "new", "decision_no": None},
            {"status": "confirmed", "decision_no": None, "note": "轨迹清楚"},
        )
    ]
    ((_, _, before, after),) = _audit(db, "violation.open_case")
    assert before["status"] == "confirmed" and after["decision_no"].startswith("深城管罚决字")
    assert len(_audit(db, "violation.close")) == 1
    assert _audit(db, "violation.dismiss") == []  # refused actions change and record nothing


def test_dismiss_needs_a_reason(as_role, db, world):
    client = as_role("admin")
    vid = world["v"]["speed2"]
    resp = _act(client, vid, action="dismiss", note="")
    assert resp.status_code == 400 and "a dismissal needs a reason" in resp.get_data(as_text=True)
    assert _status(db, vid)[0] == "new" and _audit(db, "violation.dismiss") == []
    assert _act(client, vid, action="dismiss", note="车辆执行应急任务").status_code == 302
    assert _status(db, vid)[0] == "dismissed"
    assert _events(db, vid)[-1] == ("admin", "dismiss", "车辆执行应急任务")
    assert _act(client, vid, action="explode").status_code == 400


def test_supervisor_and_credit_cannot_act_and_csrf_is_required(as_role, db, world):
    vid = world["v"]["speed1"]
    for role in ("supervisor", "credit"):
        client = as_role(role)
        token = csrf_of(client.get("/").get_data(as_text=True))
        resp = client.post(
            f"/violations/{vid}/action", data={"csrf_token": token, "action": "confirm"}
        )
        assert resp.status_code == 403
    client = as_role("enforcement")
    assert client.post(f"/violations/{vid}/action", data={"action": "confirm"}).status_code == 400
    assert _status(db, vid)[0] == "new"


# ---- API actions ----------------------------------------------------------------------------


def test_api_detail_and_actions_with_token_and_session(app, as_role, db, world):  # noqa: F811
    vid = world["v"]["speed1"]
    detail = as_role("supervisor").get(f"/api/v1/violations/{vid}").get_json()
    assert len(detail["evidence"]) == 6 and detail["plate"] == "粤B10001"
    assert detail["events"][0]["action"] == "detected" and detail["rule_params"]["limit_kmh"] == 60
    assert as_role("supervisor").get("/api/v1/violations/999999").status_code == 404
    with db.cursor() as cur:
        token = create_token(cur, "enforcement", "数字城管")
        sup_token = create_token(cur, "supervisor", "wall")
    db.commit()
    anon = app.test_client()
    url = f"/api/v1/violations/{vid}/actions"
    auth = {"Authorization": f"Bearer {token}"}
    resp = anon.post(
        url, json={"action": "confirm"}, headers={"Authorization": f"Bearer {sup_token}"}
    )
    assert resp.status_code == 403
    assert anon.post(url, json={"action": "confirm"}).status_code == 401
    assert anon.post(url, json={"action": "dismiss"}, headers=auth).status_code == 400
    assert anon.post(url, json={"action": "open_case"}, headers=auth).status_code == 400
    assert anon.post(url, json={"action": "fly"}, headers=auth).status_code == 400
    assert anon.post(url, json=["confirm"], headers=auth).status_code == 400
    resp = anon.post(url, json={"action": "close"}, headers=auth)
    assert resp.status_code == 409 and "cannot close" in resp.get_json()["error"]
    resp = anon.post(url, json={"action": "confirm", "note": "ok"}, headers=auth)
    assert resp.status_code == 200 and resp.get_json()["status"] == "confirmed"
    assert (
        anon.post(
            "/api/v1/violations/999999/actions", json={"action": "confirm"}, headers=auth
        ).status_code
        == 404
    )
    ((who, _, before, after),) = _audit(db, "violation.confirm")
    assert who == "enforcement" and before["status"] == "new" and after["status"] == "confirmed"
    # with the session cookie, the CSRF token is required
    session = as_role("admin")
    url2 = f"/api/v1/violations/{world['v']['speed2']}/actions"
    assert session.post(url2, json={"action": "confirm"}).status_code == 400
    assert _status(db, world["v"]["speed2"])[0] == "new"
    csrf = csrf_of(session.get("/").get_data(as_text=True))
    resp = session.post(url2, json={"action": "confirm"}, headers={"X-CSRFToken": csrf})
    assert resp.status_code == 200
    assert _status(db, world["v"]["speed2"])[0] == "confirmed"


# ---- exports --------------------------------------------------------------------------------


def test_csv_export_has_bom_chinese_headers_and_filters(as_role, db, world):
    client = as_role("enforcement")
    resp = client.get("/violations/export.csv?kind=speeding&sort=started_at&dir=asc")
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"]
    raw = resp.get_data()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    header = rows[0]
    # the time columns name the city zone; their cells are its local time
    assert header[:5] == ["编号", "开始时间 (UTC+8)", "结束时间 (UTC+8)", "车牌号码", "运输企业"]
    assert "违规类型" in header and "行政处罚决定书文号" in header
    assert len(rows) == 3
    first = dict(zip(header, rows[1], strict=True))
    assert first["违规类型"] == "超速" and first["状态"] == "待审核"
    assert first["开始时间 (UTC+8)"] == "2026-11-23 08:30:00" and first["车牌号码"] == "粤B10001"
    ((who, _, _, after),) = _audit(db, "violations.export")
    assert who == "enforcement" and after["rows"] == 2 and after["format"] == "csv"


def test_xlsx_export_opens_with_openpyxl(as_role, world):
    from openpyxl import load_workbook

    resp = as_role("admin").get("/violations/export.xlsx?company=乙运输")
    assert resp.status_code == 200
    wb = load_workbook(io.BytesIO(resp.get_data()))
    ws = wb.active
    values = list(ws.values)
    assert values[0][0] == "编号" and len(values) == 3
    kinds = {dict(zip(values[0], r, strict=True))["违规类型"] for r in values[1:]}
    assert kinds == {"闯禁区", "乱倒乱卸"}


def test_export_is_bounded_and_refused_to_supervisors(db, database_url, users, world):  # noqa: F811
    from tests.web.test_dashboard import close_app, login, make_app

    small = make_app(database_url, MUCK_EXPORT_MAX_ROWS=3)
    client = small.test_client()
    login(client, "enforcement")
    resp = client.get("/violations/export.csv?kind=speeding")
    assert resp.status_code == 200
    resp = client.get("/violations/export.csv")
    assert resp.status_code == 302 and "/violations/" in resp.headers["Location"]
    html = client.get(resp.headers["Location"]).get_data(as_text=True)
    assert "超过 3 条" in html
    sup = small.test_client()
    login(sup, "supervisor")
    assert sup.get("/violations/export.csv").status_code == 403
    assert sup.get("/violations/export.xlsx").status_code == 403
    close_app(small)


# ---- black trucks ---------------------------------------------------------------------------


@pytest.fixture
def black(db):
    seen = dt.datetime(2026, 11, 23, 2, 0, tzinfo=dt.UTC)
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO sightings (camera_id, seen_at, received_at, plate, site_id, confidence,
                   image_ref)
               VALUES ('CAM-1', %s, now(), '粤B66666', 'SITE-1', 0.97,
                       'https://anpr.example/img/1.jpg') RETURNING id""",
            (seen,),
        )
        sid = cur.fetchone()[0]
        cur.execute(
            """INSERT INTO sighting_checks (sighting_id, seen_at, plate, outcome)
               VALUES (%s, %s, '粤B66666', 'unregistered_plate')""",
            (sid, seen),
        )
        cur.execute(
            """INSERT INTO black_trucks (kind, key, first_seen, last_seen, sightings,
                   confident_sightings, sites, reasons, last_evidence_at)
               VALUES ('plate', '粤B66666', %s, %s, 1, 1, '{SITE-1}', '{unregistered_plate}', %s),
                      ('device', 'GHOST-9', %s, %s, 40, 0, '{}', '{unregistered_device}', %s)
               RETURNING id""",
            (seen, seen, seen) * 2,
        )
        ids = [r[0] for r in cur.fetchall()]
    db.commit()
    return {"plate": ids[0], "device": ids[1]}


def test_black_truck_pages_and_api(as_role, black):
    client = as_role("supervisor")
    html = client.get("/black-trucks/").get_data(as_text=True)
    assert "粤B66666" in html and "GHOST-9" in html and "车牌未登记" in html
    html = client.get(f"/black-trucks/{black['plate']}").get_data(as_text=True)
    assert "https://anpr.example/img/1.jpg" in html and "CAM-1" in html and "SITE-1" in html
    assert "2026-11-23 10:00:00" in html  # local time
    assert 'id="handle-form"' not in html
    assert client.get(f"/black-trucks/{black['device']}").status_code == 200
    assert client.get("/black-trucks/999999").status_code == 404
    api = client.get("/api/v1/black-trucks?kind=device").get_json()
    assert [i["key"] for i in api["items"]] == ["GHOST-9"]
    assert client.get("/api/v1/black-trucks?status=gone").status_code == 400
    assert client.get("/black-trucks/?kind=bus").status_code == 400
    assert as_role("credit").get("/black-trucks/").status_code == 403


def test_mark_black_truck_handled(as_role, db, black):
    client = as_role("enforcement")
    url = f"/black-trucks/{black['plate']}"
    token = csrf_of(client.get(url).get_data(as_text=True))
    resp = client.post(url + "/handle", data={"csrf_token": token, "note": "  "})
    assert resp.status_code == 400 and 'data-field="note"' in resp.get_data(as_text=True)
    resp = client.post(url + "/handle", data={"csrf_token": token, "note": "已移交交警扣车"})
    assert resp.status_code == 302
    with db.cursor() as cur:
        cur.execute("SELECT status, handled_by FROM black_trucks WHERE id = %s", (black["plate"],))
        assert cur.fetchone() == ("handled", "enforcement")
        cur.execute("SELECT actor, action, note FROM black_truck_actions")
        assert cur.fetchall() == [("enforcement", "handled", "已移交交警扣车")]
    db.rollback()
    ((who, eid, before, after),) = _audit(db, "black_truck.handle")
    assert who == "enforcement" and eid == str(black["plate"])
    assert before["status"] == "new" and after["handled_note"] == "已移交交警扣车"
    sup = as_role("supervisor")
    token = csrf_of(sup.get(url).get_data(as_text=True))
    assert sup.post(url + "/handle", data={"csrf_token": token, "note": "x"}).status_code == 403
    assert client.post(url + "/handle", data={"note": "no token"}).status_code == 400


# ---- live map and overview ------------------------------------------------------------------


def test_live_map_marks_trucks_with_an_open_violation(db, database_url, users, world):
    from tests.web.test_dashboard import close_app, login, make_app, web_settings

    t1, t2, t3 = world["trucks"]
    with db.cursor() as cur:
        for tid in (t1, t2, t3):
            cur.execute(
                """INSERT INTO truck_state (truck_id, device_id, fix_time, received_at, lat, lon,
                       updated_at) VALUES (%s, 'D', now(), now(), 22.55, 114.06,
                       now() - interval '1 hour')""",
                (tid,),
            )
        cur.execute("UPDATE trucks SET updated_at = now() - interval '1 hour'")
    db.commit()
    # no overlap: see exactly what changed (the overlap re-sends rows near the cursor)
    live_app = make_app(database_url, MUCK_SETTINGS=web_settings(database_url, live_overlap_s=0))
    client = live_app.test_client()
    login(client, "supervisor")
    full = client.get("/api/v1/trucks/live").get_json()
    flags = dict(zip(full["trucks"]["id"], full["trucks"]["violation"], strict=True))
    assert flags == {t1: False, t2: True, t3: False}  # only the going-dark one is open
    gcj = client.get("/api/v1/trucks/live?crs=gcj02").get_json()
    assert dict(zip(gcj["trucks"]["id"], gcj["trucks"]["violation"], strict=True)) == flags
    # dismissing it reaches the map as a delta, though the truck's state did not change
    with db.cursor() as cur:
        cur.execute(
            "UPDATE violations SET status = 'dismissed', updated_at = now() WHERE id = %s",
            (world["v"]["dark"],),
        )
    db.commit()
    delta = client.get(f"/api/v1/trucks/live?since={full['cursor']}").get_json()
    assert delta["trucks"]["id"] == [t2] and delta["trucks"]["violation"] == [False]
    assert int(delta["cursor"]) > int(full["cursor"])
    again = client.get(f"/api/v1/trucks/live?since={delta['cursor']}").get_json()
    assert again["count"] == 0  # sent once, not on every poll
    close_app(live_app)


def test_overview_chart_and_top_companies(as_role, db, world):
    with db.cursor() as cur:
        cur.execute("UPDATE violations SET started_at = now() - interval '1 day'")
        cur.execute(
            "UPDATE violations SET started_at = now() - interval '40 days' WHERE id = %s",
            (world["v"]["old"],),
        )
    db.commit()
    html = as_role("credit").get("/").get_data(as_text=True)
    assert 'id="violations-chart"' in html
    assert 'data-kind="speeding" data-count="2"' in html
    assert 'data-kind="unsealed_transport" data-count="0"' in html  # older than 30 days
    assert "深圳市甲运输有限公司" in html and 'id="top-companies"' in html
    assert "/violations/?company_id=" not in html  # credit officers have no violation pages
    html = as_role("supervisor").get("/").get_data(as_text=True)
    assert "/violations/?company_id=" in html


def test_english_labels(as_role, world):
    client = as_role("supervisor")
    page = client.get("/violations/").get_data(as_text=True)
    client.post("/lang/en", data={"csrf_token": csrf_of(page), "next": "/violations/"})
    html = client.get("/violations/").get_data(as_text=True)
    assert "route deviation" in html and "speeding" in html and "超速" not in html


def test_role_matrix_for_every_role(as_role, world):
    vid = world["v"]["speed1"]
    for role in ROLES:
        client = as_role(role)
        view = 200 if role != "credit" else 403
        export = 200 if role in ("enforcement", "admin") else 403
        assert client.get("/violations/").status_code == view, role
        assert client.get(f"/violations/{vid}").status_code == view, role
        assert client.get("/api/v1/violations").status_code == view, role
        assert client.get("/violations/export.csv").status_code == export, role
        assert client.get("/violations/export.xlsx").status_code == export, role
        html = client.get("/").get_data(as_text=True)
        assert ('id="nav-violations"' in html) == (role != "credit"), role
