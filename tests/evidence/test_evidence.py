# ruff: noqa: F811  (pytest fixtures imported from tests.web.test_dashboard)
"""Evidence: frozen content from the versions in force, checksums that find tampering, the
PDF pack (read back with pypdf), the ZIP, and who may download what."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import psycopg2
import pypdf
import pytest

from compliance.violations import list_violations
from evidence.capture import CaptureJob, build
from evidence.content import canonical, decode, sha256
from evidence.pack import export_pdf, export_zip
from evidence.store import current_record
from geofence.io import parse_zones, read_geojson
from geofence.store import upsert_zones
from permits.io import parse_permits_json
from permits.store import import_permits
from tests.compliance.city import LOADED, ZONES, Pipeline, Trace, build_city, lonlat
from tests.web.test_dashboard import app, as_role, users  # noqa: F401

MUCK = str(Path(sys.executable).with_name("muck"))
PERMIT = "深渣准〔2026〕0001号"


def backdate_catalogue(db, to: dt.datetime) -> None:
    """The zones and permits were in force long before the scenario (in the product the
    catalogue is loaded before the trucks drive; the test city is built just now)."""
    with db.cursor() as cur:
        cur.execute("UPDATE geofence_zone_history SET recorded_from = %s", (to,))
        cur.execute("UPDATE permit_history SET recorded_from = %s", (to,))
    db.commit()


def speeding_trace(city, device="T1", seed=1) -> Trace:
    trace = Trace(device, city.base_ms, seed=seed).dwell(180, **LOADED)
    trace.drive(1000, 0, 35, **LOADED).drive(3000, 0, 60, **LOADED).drive(4950, 0, 35, **LOADED)
    return trace


@pytest.fixture
def speeding(db, settings):
    city = build_city(db, settings)
    backdate_catalogue(db, dt.datetime.fromtimestamp(city.base_ms / 1000 - 86400, dt.UTC))
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO sightings (camera_id, seen_at, received_at, plate, site_id,
                   confidence, image_ref)
               VALUES ('CAM-9', to_timestamp(%s), now(), '粤B10001', 'SITE-A', 0.97,
                       'anpr/cam9/1.jpg')""",
            (city.base_ms / 1000 + 60,),
        )
    db.commit()
    Pipeline(settings, db).feed(speeding_trace(city).messages())
    (row,) = list_violations(db)
    assert row.kind == "speeding"
    return row.id


def record_of(db, vid):
    with db.cursor() as cur:
        record = current_record(cur, vid)
    db.rollback()
    return record


def edit_catalogue(db) -> None:
    """A later edit: the route moves north and widens, the permit's validity changes."""
    zones = json.loads(json.dumps(ZONES))
    for f in zones["features"]:
        if f["properties"]["code"] == "ROUTE-AB":
            f["geometry"]["coordinates"] = [lonlat(0, 400), lonlat(5000, 400)]
            f["properties"]["width_m"] = 80
    upsert_zones(db, parse_zones(read_geojson(json.dumps(zones))))
    db.commit()
    permit = {
        "number": PERMIT,
        "company_credit_code": "91110000600037341L",
        "trucks": ["粤B10001", "粤B10002"],
        "origin_site": "SITE-A",
        "disposal_sites": ["DISP-B", "DISP-C"],
        "routes": ["ROUTE-AB"],
        "valid_from": "2026-01-01",
        "valid_to": "2026-01-31",
    }
    import_permits(db, parse_permits_json(json.dumps([permit], ensure_ascii=False)))
    db.commit()


def test_capture_holds_what_proves_it(db, settings, speeding):
    assert CaptureJob(settings)(db) == 1
    record = record_of(db, speeding)
    assert record.final and record.version == 1
    e = record.evidence
    assert e.facts.plate == "粤B10001" and e.facts.company == "城市渣土运输公司"
    # fixes from the margin before the start to the margin after the end
    assert e.fixes[0].t <= e.facts.started_at - dt.timedelta(seconds=50)
    assert e.fixes[-1].t >= e.facts.ended_at + dt.timedelta(seconds=50)
    assert any(f.in_episode for f in e.fixes) and not e.fixes[0].in_episode
    assert max(f.speed for f in e.fixes) >= 55 and e.fixes[0].load == "full"
    assert {z.code: z.role for z in e.zones} == {
        "SITE-A": "origin",
        "DISP-B": "disposal",
        "ROUTE-AB": "route",
    }
    assert all(z.in_force for z in e.zones)
    (permit,) = e.permits
    assert permit.number == PERMIT and permit.permit["plates"] == ["粤B10001"]
    assert [s.camera_id for s in e.sightings] == ["CAM-9"]
    assert [t.device_id for t in e.terminals] == ["T1"]
    assert e.rule.section == "rules.speeding" and e.rule.label_zh == "超速"
    assert e.rule.table["min_duration_s"] == 30.0 and e.rule.thresholds["min_duration_s"] == 30
    assert e.measured.worst_value > 10 and e.measured.unit == "km/h over"
    assert e.rule.legal_basis.startswith("《中华人民共和国道路交通安全法》")
    # canonical: the stored text is what is hashed, and decoding it gives it back
    assert sha256(record.content) == record.sha256
    assert canonical(decode(record.content)) == record.content
    with db.cursor() as cur:
        cur.execute("SELECT actor, action FROM evidence_audit WHERE violation_id = %s", (speeding,))
        assert cur.fetchall() == [("system", "finalise")]
    db.rollback()
    # nothing more to do: a second run leaves it alone
    assert CaptureJob(settings)(db) == 0
    assert record_of(db, speeding).sha256 == record.sha256


def test_later_edits_do_not_change_the_evidence(db, settings, speeding):
    CaptureJob(settings)(db)
    before = record_of(db, speeding)
    edit_catalogue(db)
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM geofence_zone_history WHERE code = 'ROUTE-AB'")
        assert cur.fetchone()[0] == 2, "the edit is a new version"
        cur.execute("SELECT count(*) FROM geofence_zone_history WHERE code = 'SITE-A'")
        assert cur.fetchone()[0] == 1, "an unchanged zone keeps its version"
        cur.execute("SELECT count(*) FROM permit_history")
        assert cur.fetchone()[0] == 2
    db.commit()
    # the stored record is untouched
    after = record_of(db, speeding)
    assert (after.id, after.content, after.sha256) == (before.id, before.content, before.sha256)
    route = next(z for z in after.evidence.zones if z.code == "ROUTE-AB")
    assert route.attributes["width_m"] == 50
    # and capturing again now still picks the versions in force at the violation's start
    with db.cursor() as cur:
        again, _ = build(cur, settings, speeding, dt.datetime.now(dt.UTC))
    db.rollback()
    route = next(z for z in again.zones if z.code == "ROUTE-AB")
    assert route.attributes["width_m"] == 50 and route.in_force
    assert route.geometry["coordinates"][0][1] == pytest.approx(lonlat(0, 0)[1])
    (permit,) = again.permits
    assert permit.permit["valid_to"] != "2026-01-31" and permit.permit["plates"] == ["粤B10001"]
    assert "DISP-C" not in {z.code for z in again.zones}


def test_a_violation_after_the_edit_gets_the_new_version(db, settings, speeding):
    edit_catalogue(db)
    with db.cursor() as cur:
        # as if the edit had been made before the scenario's second hour
        cur.execute(
            """UPDATE geofence_zone_history SET recorded_from = v.started_at - interval '1 min'
               FROM violations v WHERE v.id = %s AND recorded_to IS NULL
                 AND geofence_zone_history.code = 'ROUTE-AB'""",
            (speeding,),
        )
        cur.execute(
            """UPDATE geofence_zone_history SET recorded_to = v.started_at - interval '1 min'
               FROM violations v WHERE v.id = %s AND recorded_to IS NOT NULL
                 AND geofence_zone_history.code = 'ROUTE-AB'""",
            (speeding,),
        )
    db.commit()
    with db.cursor() as cur:
        evidence, _ = build(cur, settings, speeding, dt.datetime.now(dt.UTC))
    db.rollback()
    route = next(z for z in evidence.zones if z.code == "ROUTE-AB")
    assert route.attributes["width_m"] == 80


def muck(settings, *args):
    env = {**os.environ, "MUCK_DATABASE_URL": settings.database_url}
    return subprocess.run([MUCK, *args], capture_output=True, text=True, env=env, timeout=120)


def test_verify_finds_a_tampered_record(db, settings, speeding):
    CaptureJob(settings)(db)
    ok = muck(settings, "evidence", "verify", str(speeding))
    assert ok.returncode == 0, ok.stderr
    assert "checked 1 evidence record(s): 0 mismatch(es)" in ok.stdout
    # the product refuses to rewrite a final record ...
    with pytest.raises(psycopg2.Error, match="is final"), db.cursor() as cur:
        cur.execute("UPDATE evidence_records SET content = content || ' ' WHERE true")
    db.rollback()
    # ... someone with the owner's rights goes round the trigger
    with db.cursor() as cur:
        cur.execute("SET session_replication_role = replica")
        cur.execute(
            """UPDATE evidence_records SET content = replace(content, '粤B10001', '粤B10009')
               WHERE violation_id = %s""",
            (speeding,),
        )
        cur.execute("SET session_replication_role = origin")
    db.commit()
    bad = muck(settings, "evidence", "verify", str(speeding))
    assert bad.returncode == 1
    assert f"MISMATCH violation {speeding}" in bad.stderr and "checksum mismatch" in bad.stderr
    assert "1 mismatch(es)" in bad.stdout
    every = muck(settings, "evidence", "verify", "--all")
    assert every.returncode == 1 and "MISMATCH" in every.stderr
    none = muck(settings, "evidence", "verify", "999999")
    assert none.returncode == 1 and "no evidence records" in none.stderr
    usage = muck(settings, "evidence", "verify")
    assert usage.returncode == 2


def pdf_text(data: bytes) -> tuple[str, pypdf.PdfReader]:
    reader = pypdf.PdfReader(io.BytesIO(data))
    return "\n".join(page.extract_text() for page in reader.pages), reader


def embedded_fonts(reader: pypdf.PdfReader) -> set[str]:
    names = set()
    for page in reader.pages:
        fonts = page["/Resources"].get_object().get("/Font", {})
        for ref in fonts.values():
            font = ref.get_object()
            for desc in [font.get("/FontDescriptor")] + [
                d.get_object().get("/FontDescriptor") for d in font.get("/DescendantFonts", [])
            ]:
                if desc is None:
                    continue
                desc = desc.get_object()
                if any(k in desc for k in ("/FontFile", "/FontFile2", "/FontFile3")):
                    names.add(str(desc["/FontName"]))
    return names


def test_pdf_pack_reads_back_in_chinese(db, settings, speeding):
    CaptureJob(settings)(db)
    record = record_of(db, speeding)
    pdf = export_pdf(db, settings, speeding, "officer1")
    text, reader = pdf_text(pdf)
    compact = text.replace(" ", "").replace("\n", "")
    for expected in ("违法事实", "超速", "粤B10001", "城市渣土运输公司", "处罚依据", "证据已固化"):
        assert expected in compact, expected
    start = record.evidence.facts.started_at.astimezone(dt.timezone(dt.timedelta(hours=8)))
    assert start.strftime("%Y-%m-%d%H:%M:%S") in compact, "start time in city time"
    assert "Asia/Shanghai" in text and "UTC+08:00" in compact
    assert record.sha256 in compact, "the full checksum is printed"
    assert PERMIT in compact and "T1" in compact and "CAM-9" in compact
    fonts = {name.replace("-", "") for name in embedded_fonts(reader)}
    # The fast GB 2312 font make install builds (core/cjk_fonts.py), not the full Noto.
    assert any("MuckWatchCJKSC" in name for name in fonts), f"CJK font not embedded: {fonts}"
    assert len(reader.pages) >= 2
    with db.cursor() as cur:
        cur.execute("SELECT actor, action, sha256 FROM evidence_audit WHERE action = 'export_pdf'")
        assert cur.fetchall() == [("officer1", "export_pdf", record.sha256)]
    db.rollback()


def test_zip_has_one_pack_per_violation(db, settings):
    city = build_city(db, settings)
    Pipeline(settings, db).feed(
        speeding_trace(city).messages() + speeding_trace(city, "T2", seed=2).messages()
    )
    ids = sorted(row.id for row in list_violations(db) if row.kind == "speeding")
    assert len(ids) == 2
    CaptureJob(settings)(db)
    data, missing = export_zip(db, settings, ids, "officer1")
    assert missing == []
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert sorted(names) == sorted(f"{vid}_粤B1000{i}.pdf" for i, vid in enumerate(ids, 1))
    for name in names:
        text, _ = pdf_text(zipfile.ZipFile(io.BytesIO(data)).read(name))
        assert name.split("_")[1][:-4] in text.replace(" ", "")


def test_open_episode_is_provisional_then_final(db, settings):
    city = build_city(db, settings)
    trace = speeding_trace(city)
    messages = trace.messages()
    pipeline = Pipeline(settings, db)
    # up to the middle of the fast leg: the episode is open
    fast = next(i for i, f in enumerate(trace.fixes) if f["speed"] > 50)
    pipeline.feed(messages[: fast + 12])
    (row,) = list_violations(db)
    assert row.ended_at is None
    CaptureJob(settings)(db)
    first = record_of(db, row.id)
    assert not first.final and first.fixes > 0
    assert first.evidence.facts.ended_at is None
    # within refresh_s nothing is captured again
    assert CaptureJob(settings)(db) == 0
    assert record_of(db, row.id).captured_at == first.captured_at
    pipeline.feed(messages[fast + 12 :])
    CaptureJob(settings)(db)
    final = record_of(db, row.id)
    assert final.final and final.id == first.id and final.fixes > first.fixes
    with db.cursor() as cur:
        cur.execute("SELECT action FROM evidence_audit ORDER BY id")
        assert [r[0] for r in cur.fetchall()] == ["capture", "finalise"]
    db.rollback()


# ---- pages and API by role ----------------------------------------------------------------


def test_page_says_collecting_until_final_then_shows_the_record(as_role, db, settings, speeding):
    client = as_role("enforcement")
    html = client.get(f"/violations/{speeding}").get_data(as_text=True)
    assert 'id="evidence-status"' in html and "evidence-pdf" not in html
    assert "collecting" in html and "证据仍在采集中" in html
    assert 'id="evidence-overdue"' in html, "ended hours ago: the capture is late"
    # positions straight from the table, in city time
    assert html.count('class="in-episode"') > 0
    CaptureJob(settings)(db)
    record = record_of(db, speeding)
    html = client.get(f"/violations/{speeding}").get_data(as_text=True)
    assert record.sha256 in html and 'id="evidence-pdf"' in html
    assert f"/violations/{speeding}/evidence.pdf" in html
    detail = client.get(f"/api/v1/violations/{speeding}").get_json()
    assert detail["evidence_status"]["final"] is True
    assert detail["evidence_status"]["sha256"] == record.sha256
    assert len(detail["evidence"]) == record.fixes


def test_page_names_the_time_the_evidence_will_be_fixed(as_role, db, settings, speeding):
    with db.cursor() as cur:  # the episode ended a minute ago (final_delay_s is 120)
        cur.execute(
            """UPDATE violations SET ended_at = now() - interval '1 minute',
                   started_at = now() - interval '3 minutes' WHERE id = %s""",
            (speeding,),
        )
        cur.execute("SELECT ended_at FROM violations WHERE id = %s", (speeding,))
        ended = cur.fetchone()[0]
    db.commit()
    html = as_role("supervisor").get(f"/violations/{speeding}").get_data(as_text=True)
    assert "Asia/Shanghai" in html and "collecting" in html
    due = ended + dt.timedelta(seconds=settings["evidence"]["final_delay_s"])
    assert due.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M:%S") in html
    assert "证据仍在采集中" in html and "将于" in html and "固化" in html
    assert "evidence-overdue" not in html


@pytest.mark.parametrize("role", ["supervisor", "enforcement", "credit", "admin"])
def test_every_reading_role_downloads_and_it_is_audited(as_role, db, settings, speeding, role):
    CaptureJob(settings)(db)
    client = as_role(role)
    pdf = client.get(f"/violations/{speeding}/evidence.pdf")
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf"
    api_pdf = client.get(f"/api/v1/violations/{speeding}/evidence.pdf")
    assert api_pdf.status_code == 200 and api_pdf.data[:5] == b"%PDF-"
    body = client.get(f"/api/v1/violations/{speeding}/evidence").get_json()
    assert body["sha256"] == sha256(body["content_text"])
    assert body["evidence"]["facts"]["plate"] == "粤B10001"
    zipped = client.get("/api/v1/violations/evidence.zip?kind=speeding")
    assert zipped.status_code == 200
    assert zipfile.ZipFile(io.BytesIO(zipped.data)).namelist() == [f"{speeding}_粤B10001.pdf"]
    with db.cursor() as cur:
        cur.execute(
            "SELECT actor, action, detail->>'via' FROM evidence_audit WHERE actor <> 'system'"
        )
        got = sorted(cur.fetchall())
    db.rollback()
    user = role
    assert got == sorted(
        [
            (user, "export_pdf", "web"),
            (user, "export_pdf", "api"),
            (user, "export_json", "api"),
            (user, "export_zip", "api"),
        ]
    )


def test_missing_evidence_and_zip_limit(as_role, db, settings, speeding, app):
    client = as_role("enforcement")
    assert client.get(f"/violations/{speeding}/evidence.pdf").status_code == 404
    body = client.get(f"/api/v1/violations/{speeding}/evidence")
    assert body.status_code == 404 and "no evidence yet" in body.get_json()["error"]
    assert client.get("/api/v1/violations/999999/evidence.pdf").status_code == 404
    CaptureJob(settings)(db)
    app.config["MUCK_EVIDENCE_ZIP_MAX"] = 0
    refused = client.get("/api/v1/violations/evidence.zip")
    assert refused.status_code == 400 and "最多包含 0 条" in refused.get_json()["error"]
    page = client.get("/violations/evidence.zip?kind=speeding", follow_redirects=True)
    assert page.status_code == 200 and "evidence-zip" in page.get_data(as_text=True)
    bad = client.get("/api/v1/violations/evidence.zip?kind=nonsense")
    assert bad.status_code == 400


def test_a_backlog_with_one_timestamp_is_queued_whole(db, settings, monkeypatch):
    """A mass update gives thousands of violations one updated_at: the queue still takes
    them all, in steps that each move the cursor on (never the same page for ever)."""
    import evidence.capture as capture

    city = build_city(db, settings)
    with db.cursor() as cur:
        cur.execute(
            """INSERT INTO violations (truck_id, kind, stream, started_at, ended_at, updated_at)
               SELECT %s, 'speeding', 'over_limit', now() - g * interval '1 hour',
                      now() - g * interval '1 hour' + interval '1 minute',
                      now() - interval '1 day' + (g / 3) * interval '1 second'
               FROM generate_series(1, 7) g""",
            (city.trucks["T1"],),
        )
    db.commit()
    monkeypatch.setattr(capture, "QUEUE_BATCH", 2)
    job = CaptureJob(settings.with_overrides(evidence={"batch": 100}))
    assert job(db) == 7
    with db.cursor() as cur:
        cur.execute("SELECT count(*) FROM evidence_records WHERE final")
        assert cur.fetchone()[0] == 7
    db.rollback()


def test_a_backlog_of_old_violations_does_not_hold_up_new_ones(db, settings):
    city = build_city(db, settings)
    with db.cursor() as cur:  # an upgraded database: old violations, never captured
        cur.execute(
            """INSERT INTO violations (truck_id, kind, stream, started_at, ended_at)
               SELECT %s, 'speeding', 'over_limit', now() - g * interval '30 days',
                      now() - g * interval '30 days' + interval '1 minute'
               FROM generate_series(1, 5) g""",
            (city.trucks["T1"],),
        )
    db.commit()
    Pipeline(settings, db).feed(speeding_trace(city).messages())
    new = max(row.id for row in list_violations(db))
    job = CaptureJob(settings.with_overrides(evidence={"batch": 1}))
    assert job(db) == 1
    assert record_of(db, new) is not None, "today's violation first"


def test_a_revision_after_final_is_a_new_version_and_the_old_one_stays(db, settings, speeding):
    CaptureJob(settings)(db)
    first = record_of(db, speeding)
    with db.cursor() as cur:  # late fixes made the episode longer (compliance's reconcile)
        cur.execute(
            """UPDATE violations SET ended_at = ended_at + interval '30 seconds',
                   updated_at = now() WHERE id = %s""",
            (speeding,),
        )
    db.commit()
    assert CaptureJob(settings)(db) == 1
    second = record_of(db, speeding)
    assert second.version == 2 and second.final and second.id != first.id
    assert second.evidence.facts.ended_at == first.evidence.facts.ended_at + dt.timedelta(
        seconds=30
    )
    with db.cursor() as cur:
        cur.execute(
            "SELECT version, superseded_at IS NOT NULL, sha256 FROM evidence_records ORDER BY 1"
        )
        assert cur.fetchall() == [(1, True, first.sha256), (2, False, second.sha256)]
    db.rollback()
    verified = muck(settings, "evidence", "verify", str(speeding))
    assert verified.returncode == 0 and "checked 2 evidence record(s)" in verified.stdout
