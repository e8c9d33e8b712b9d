"""Black trucks: each sighting classification both ways on real rows, the pending rule,
idempotence, grouping by plate and by unregistered device, handling, CLI."""

from __future__ import annotations

import datetime as dt
import json
import threading

import pytest
from pyproj import Geod

from black_trucks.devices import scan_unregistered_devices
from black_trucks.sightings import match_new_sightings
from black_trucks.store import (
    get_black_truck,
    handle_black_truck,
    list_black_trucks,
    plate_sightings,
)
from core.config import load_settings
from core.db import connect, transaction
from permits.io import parse_permits_json
from permits.store import import_permits, revoke_permit
from registry.service import upsert_company, upsert_truck
from tests.permits.test_permits import make_registry, runner  # noqa: F401 (fixture)

GEOD = Geod(ellps="WGS84")
# SITE-A (tests.permits.test_permits.make_registry) is a square of +/- 0.002 deg around this point.
SITE_LON, SITE_LAT = 114.06, 22.55
EDGE_LON = SITE_LON + 0.002  # the east edge of SITE-A
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def east_of_site(metres: float) -> tuple[float, float]:
    lon, lat, _ = GEOD.fwd(EDGE_LON, SITE_LAT, 90.0, metres)
    return lon, lat


def settings_for(database_url: str, **compliance):
    settings = load_settings()
    settings = settings.__class__(
        settings.sections, database_url, settings.mqtt_url, settings.source
    )
    return settings.with_overrides(compliance=compliance) if compliance else settings


def permit(conn, number: str, plates: list[str], **extra) -> None:
    today = NOW.date()
    record = {
        "number": number,
        "company": "深圳某某运输有限公司",
        "trucks": plates,
        "origin_site": "SITE-A",
        "disposal_sites": ["DISP-1"],
        "valid_from": (today - dt.timedelta(days=30)).isoformat(),
        "valid_to": (today + dt.timedelta(days=30)).isoformat(),
    }
    record.update(extra)
    import_permits(conn, parse_permits_json(json.dumps([record], ensure_ascii=False)))


def sighting(
    conn,
    plate: str,
    seen_at: dt.datetime,
    *,
    site: str | None = "SITE-A",
    camera: str = "CAM-1",
    confidence: float | None = 0.95,
) -> int:
    with transaction(conn) as cur:
        cur.execute(
            """INSERT INTO sightings (camera_id, seen_at, received_at, plate, plate_color,
                   direction, site_id, confidence, image_ref)
               VALUES (%s, %s, %s, %s, 'yellow', 'in', %s, %s, %s) RETURNING id""",
            (
                camera,
                seen_at,
                seen_at,
                plate,
                site,
                confidence,
                f"anpr/{camera}/{seen_at:%H%M%S}-{plate}.jpg",
            ),
        )
        return cur.fetchone()[0]


def fix(conn, device: str, truck_id: int | None, at: dt.datetime, lon: float, lat: float) -> None:
    with transaction(conn) as cur:
        cur.execute(
            """INSERT INTO positions (device_id, fix_time, received_at, truck_id, lat, lon,
                   speed_kmh)
               VALUES (%s, %s, %s, %s, %s, %s, 20)""",
            (device, at, at, truck_id, lat, lon),
        )


def outcomes(conn) -> dict[int, tuple]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT sighting_id, outcome, low_confidence, nearest_fix_m FROM sighting_checks"
        )
        rows = {row[0]: row[1:] for row in cur.fetchall()}
    conn.commit()
    return rows


def snapshot(conn) -> list:
    with conn.cursor() as cur:
        out = []
        for table in ("sighting_checks", "black_trucks", "unregistered_device_days"):
            cur.execute(f"SELECT * FROM {table} ORDER BY 1, 2")  # noqa: S608 (fixed names)
            out.append(cur.fetchall())
    conn.commit()
    return out


@pytest.fixture
def fleet(db):
    plates = ["粤B20001", "粤B20002", "粤B20003", "粤B20004", "粤B20005", "粤B20006"]
    ids = make_registry(db, plates)
    permit(db, "P-OK", ["粤B20001", "粤B20003", "粤B20004", "粤B20006"])
    permit(db, "P-REVOKED", ["粤B20005"])
    revoke_permit(db, "P-REVOKED", "撤销")
    with transaction(db) as cur:
        cur.execute("UPDATE trucks SET trailer_plate = '粤B2006挂' WHERE plate = '粤B20006'")
    return ids


def test_each_classification(db, database_url, fleet):
    settings = settings_for(database_url)
    at = NOW - dt.timedelta(hours=1)  # the pending window has passed
    near = east_of_site(300)
    far = east_of_site(3000)
    fix(db, "D1", fleet["粤B20001"], at - dt.timedelta(minutes=2), *near)
    fix(db, "D3", fleet["粤B20003"], at - dt.timedelta(minutes=2), *far)
    # a fix near the site but outside the time window does not count
    fix(db, "D4", fleet["粤B20004"], at - dt.timedelta(minutes=6), SITE_LON, SITE_LAT)
    fix(db, "D6", fleet["粤B20006"], at + dt.timedelta(minutes=4), SITE_LON, SITE_LAT)
    s = {
        "ok_300m": sighting(db, "粤B20001", at),
        "far_3km": sighting(db, "粤B20003", at),
        "no_fix": sighting(db, "粤B20004", at),
        "no_permit": sighting(db, "粤B20002", at),
        "revoked": sighting(db, "粤B20005", at),
        "unknown": sighting(db, "粤B99999", at),
        "unknown_low": sighting(db, "粤B88888", at, confidence=0.5),
        "trailer_inside": sighting(db, "粤B2006挂", at),
        "no_site_far": sighting(db, "粤B20003", at, site=None, camera="CAM-ROAD"),
        "no_site_nofix": sighting(db, "粤B20004", at, site=None, camera="CAM-ROAD"),
    }
    report = match_new_sightings(db, settings, now=NOW)
    assert report.examined == len(s)
    got = outcomes(db)
    assert got[s["ok_300m"]][0] == "ok"
    assert got[s["ok_300m"]][2] == pytest.approx(300, abs=3)
    assert got[s["far_3km"]][0] == "untracked"
    assert got[s["far_3km"]][2] == pytest.approx(3000, abs=10)
    assert got[s["no_fix"]] == ("untracked", False, None)
    assert got[s["no_permit"]][0] == "no_valid_permit"
    assert got[s["revoked"]][0] == "no_valid_permit"
    assert got[s["unknown"]] == ("unregistered_plate", False, None)
    assert got[s["unknown_low"]] == ("unregistered_plate", True, None)
    assert got[s["trailer_inside"]] == ("ok", False, 0.0)
    # cameras without a site: time-only check
    assert got[s["no_site_far"]][0] == "ok"
    assert got[s["no_site_nofix"]][0] == "untracked"

    listed = {b.key: b for b in list_black_trucks(db)}
    assert set(listed) == {"粤B20003", "粤B20004", "粤B20002", "粤B20005", "粤B99999"}
    assert "粤B88888" not in listed, "a low-confidence read alone is not evidence"
    assert listed["粤B20002"].reasons == ("no_valid_permit",)
    assert listed["粤B20004"].sightings == 2
    assert listed["粤B99999"].truck_id is None


def test_radius_is_configurable(db, database_url, fleet):
    at = NOW - dt.timedelta(hours=1)
    fix(db, "D1", fleet["粤B20001"], at, *east_of_site(300))
    sid = sighting(db, "粤B20001", at)
    match_new_sightings(db, settings_for(database_url, anpr_match_radius_m=200.0), now=NOW)
    assert outcomes(db)[sid][0] == "untracked"


def test_pending_until_window_and_grace_have_passed(db, database_url, fleet):
    settings = settings_for(database_url)  # window 5 min, grace 10 min
    seen = NOW - dt.timedelta(minutes=3)
    sid = sighting(db, "粤B20004", seen)
    other = sighting(db, "粤B20001", seen)
    match_new_sightings(db, settings, now=NOW)
    assert outcomes(db)[sid][0] == "pending"
    assert get_black_truck(db, "粤B20004") is None, "pending is not evidence"
    # a terminal re-uploads a fix taken 1 min after the sighting: the pending one clears
    fix(db, "D1", fleet["粤B20001"], seen + dt.timedelta(minutes=1), SITE_LON, SITE_LAT)
    match_new_sightings(db, settings, now=NOW + dt.timedelta(minutes=1))
    assert outcomes(db)[other][0] == "ok"
    assert outcomes(db)[sid][0] == "pending"
    # still within seen + 5 min + 10 min
    match_new_sightings(db, settings, now=seen + dt.timedelta(minutes=14, seconds=59))
    assert outcomes(db)[sid][0] == "pending"
    match_new_sightings(db, settings, now=seen + dt.timedelta(minutes=15))
    assert outcomes(db)[sid][0] == "untracked"
    assert get_black_truck(db, "粤B20004").reasons == ("untracked",)


def test_matcher_is_idempotent_and_safe_concurrently(db, database_url, fleet):
    settings = settings_for(database_url)
    at = NOW - dt.timedelta(hours=2)
    for i in range(30):
        sighting(db, "粤B99999" if i % 2 else "粤B20002", at + dt.timedelta(seconds=i))
    errors: list[BaseException] = []

    def run() -> None:
        conn = connect(database_url)
        try:
            match_new_sightings(conn, settings, now=NOW, batch_size=7)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    before = snapshot(db)
    assert len(before[0]) == 30
    assert {b.key: b.sightings for b in list_black_trucks(db)} == {"粤B99999": 15, "粤B20002": 15}
    again = match_new_sightings(db, settings, now=NOW)
    assert again.examined == 0 and again.changed == 0
    recheck = match_new_sightings(db, settings, now=NOW, recheck=True)
    assert recheck.examined == 30 and recheck.changed == 0
    assert snapshot(db) == before


def test_grouping_by_plate(db, database_url, fleet):
    settings = settings_for(database_url)
    t0 = NOW - dt.timedelta(hours=5)
    sighting(db, "粤B99999", t0, site="SITE-A")
    sighting(db, "粤B99999", t0 + dt.timedelta(hours=1), site="DISP-1", camera="CAM-2")
    sighting(db, "粤B99999", t0 + dt.timedelta(hours=2), site=None, camera="CAM-3")
    low = sighting(db, "粤B99999", t0 + dt.timedelta(hours=3), site="SITE-B", confidence=0.3)
    sighting(db, "粤B77777", t0, confidence=0.2)
    match_new_sightings(db, settings, now=NOW)
    (black,) = list_black_trucks(db)
    assert black.kind == "plate" and black.key == "粤B99999"
    assert black.first_seen == t0
    assert black.last_seen == t0 + dt.timedelta(hours=3)
    assert black.sightings == 4 and black.confident_sightings == 3
    assert black.sites == ("DISP-1", "SITE-A", "SITE-B")
    assert black.reasons == ("unregistered_plate",)
    assert black.status == "new"
    evidence = plate_sightings(db, "粤B99999")
    assert [e.camera_id for e in evidence] == ["CAM-1", "CAM-2", "CAM-3", "CAM-1"]
    assert all(e.image_ref.startswith("anpr/") for e in evidence)
    assert [e.low_confidence for e in evidence] == [False, False, False, True]
    assert evidence[3].sighting_id == low


def test_handling_and_reopening(db, database_url, fleet):
    settings = settings_for(database_url)
    sighting(db, "粤B99999", NOW - dt.timedelta(hours=3))
    sighting(db, "粤B20002", NOW - dt.timedelta(hours=3))
    match_new_sightings(db, settings, now=NOW)
    handled = handle_black_truck(db, "粤b99999", note="已移交交警", actor="officer-7")
    assert handled.status == "handled"
    assert handled.handled_by == "officer-7" and handled.handled_note == "已移交交警"
    assert [b.key for b in list_black_trucks(db, status="new")] == ["粤B20002"]
    assert [b.key for b in list_black_trucks(db, status="handled")] == ["粤B99999"]
    with pytest.raises(LookupError):
        handle_black_truck(db, "粤B12121", note="x", actor="a")
    with pytest.raises(ValueError, match="note"):
        handle_black_truck(db, "粤B20002", note=" ", actor="a")
    # running again without new evidence keeps it handled
    match_new_sightings(db, settings, now=NOW, recheck=True)
    assert get_black_truck(db, "粤B99999").status == "handled"
    # seen again later: back on the new list, the handling stays on record
    sighting(db, "粤B99999", NOW - dt.timedelta(hours=1))
    match_new_sightings(db, settings, now=NOW)
    reopened = get_black_truck(db, "粤B99999")
    assert reopened.status == "new" and reopened.sightings == 2
    assert reopened.handled_by == "officer-7"
    with db.cursor() as cur:
        cur.execute("SELECT action, actor FROM black_truck_actions ORDER BY id")
        assert cur.fetchall() == [("handled", "officer-7"), ("reopened", "system")]


def test_unregistered_devices_grouped_by_device(db, database_url, fleet):
    settings = settings_for(database_url)
    t0 = NOW - dt.timedelta(hours=3)
    for i in range(5):
        fix(db, "GHOST-1", None, t0 + dt.timedelta(minutes=i), SITE_LON, SITE_LAT)
    fix(db, "GHOST-1", None, t0 + dt.timedelta(minutes=30), 114.10, 22.60)  # in DISP-1
    fix(db, "GHOST-2", None, t0, 114.30, 22.70)  # outside every zone
    fix(db, "D1", fleet["粤B20001"], t0, SITE_LON, SITE_LAT)  # registered: ignored
    report = scan_unregistered_devices(db, settings, now=NOW)
    assert report.devices == 2 and report.fixes == 7
    listed = {b.key: b for b in list_black_trucks(db, kind="device")}
    assert set(listed) == {"GHOST-1", "GHOST-2"}
    ghost = listed["GHOST-1"]
    assert ghost.sightings == 6
    assert ghost.first_seen == t0 and ghost.last_seen == t0 + dt.timedelta(minutes=30)
    assert ghost.sites == ("DISP-1", "SITE-A")
    assert ghost.reasons == ("unregistered_device",)
    assert listed["GHOST-2"].sites == ()
    before = snapshot(db)
    again = scan_unregistered_devices(db, settings, now=NOW)
    assert again.days_changed == 0
    assert snapshot(db) == before
    # a late re-upload of an older fix is counted on the next scan
    fix(db, "GHOST-1", None, t0 - dt.timedelta(minutes=10), SITE_LON, SITE_LAT)
    scan_unregistered_devices(db, settings, now=NOW)
    ghost = get_black_truck(db, "GHOST-1", "device")
    assert ghost.sightings == 7 and ghost.first_seen == t0 - dt.timedelta(minutes=10)
    handle_black_truck(db, "GHOST-1", note="终端厂家已核实", actor="a", kind="device")
    assert get_black_truck(db, "GHOST-1", "device").status == "handled"


def test_cli_scan_list_handle(db, database_url, fleet, runner):  # noqa: F811
    sighting(db, "粤B99999", NOW - dt.timedelta(hours=2))
    fix(db, "GHOST-9", None, NOW - dt.timedelta(hours=2), SITE_LON, SITE_LAT)
    result = runner("black-trucks", "scan")
    assert result.exit_code == 0, result.output
    assert "unregistered_plate 1" in result.output and "1 device(s)" in result.output
    result = runner("black-trucks", "list", "--status", "new")
    assert "粤B99999" in result.output and "GHOST-9" in result.output
    result = runner("black-trucks", "show", "粤B99999")
    assert result.exit_code == 0 and "anpr/CAM-1/" in result.output
    result = runner("black-trucks", "handle", "粤B99999", "--note", "已处理", "--by", "王")
    assert result.exit_code == 0 and "handled by 王" in result.output
    result = runner("black-trucks", "list", "--status", "new")
    assert "粤B99999" not in result.output and "GHOST-9" in result.output
    result = runner("black-trucks", "handle", "粤B00000", "--note", "x")
    assert result.exit_code == 1 and "not on the black-truck list" in result.output
    assert "Traceback" not in result.output


def test_low_confidence_read_of_a_listed_plate_is_shown_but_not_alone(db, database_url, fleet):
    settings = settings_for(database_url, anpr_min_confidence=0.9)
    sid = sighting(db, "粤B99999", NOW - dt.timedelta(hours=2), confidence=0.85)
    match_new_sightings(db, settings, now=NOW)
    assert outcomes(db)[sid][1] is True
    assert list_black_trucks(db) == []
    with transaction(db) as cur:
        upsert_company(cur, "x", None)
        upsert_truck(cur, "粤B99999", None)
    # the plate is now registered (no permit): a recheck reclassifies it
    match_new_sightings(db, settings, now=NOW, recheck=True)
    assert outcomes(db)[sid][0] == "no_valid_permit"


def test_the_minute_scan_reads_only_devices_with_new_fixes(db, database_url, fleet):
    """The collector's minute job recomputes only devices with fixes received since its last
    pass; the full pass (first, hourly, CLI) recomputes all of them."""
    settings = settings_for(database_url)
    t0 = NOW - dt.timedelta(hours=3)
    for i in range(3):
        fix(db, "GHOST-1", None, t0 + dt.timedelta(minutes=i), SITE_LON, SITE_LAT)
        fix(db, "GHOST-2", None, t0 + dt.timedelta(minutes=i), 114.30, 22.70)
    first = scan_unregistered_devices(db, settings, now=NOW, incremental=True)
    assert first.fixes == 6 and first.devices == 2  # no cursor yet: a full pass
    # A new fix of GHOST-2 arrives now; GHOST-1's fixes vanish (only a full pass sees that).
    with transaction(db) as cur:
        cur.execute(
            """INSERT INTO positions (device_id, fix_time, received_at, truck_id, lat, lon)
               VALUES ('GHOST-2', %s, now(), NULL, 22.70, 114.30)""",
            (t0 + dt.timedelta(minutes=5),),
        )
        cur.execute("DELETE FROM positions WHERE device_id = 'GHOST-1'")
    minute = scan_unregistered_devices(db, settings, now=NOW, incremental=True)
    assert minute.fixes == 4 and minute.devices == 1  # GHOST-2's rows only
    assert get_black_truck(db, "GHOST-2", "device").sightings == 4
    assert get_black_truck(db, "GHOST-1", "device") is not None
    assert scan_unregistered_devices(db, settings, now=NOW, incremental=True).fixes == 4
    full = scan_unregistered_devices(db, settings, now=NOW)
    assert full.fixes == 4
    assert get_black_truck(db, "GHOST-1", "device") is None  # gone with its fixes
