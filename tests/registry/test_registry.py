"""The registry: the one plate normaliser, and the bulk registration of scratch fleets."""

from __future__ import annotations

import datetime as dt

import msgspec

from core.config import load_settings
from registry.service import register_fleet, remove_company, save_truck
from registry.validation import normalise_plate
from telemetry.validation import Limits, Rejection, decode_sighting


def test_cameras_and_the_registry_normalise_plates_alike():
    assert normalise_plate(" 粤b·12-345 ") == "粤B12345"
    now = 1_790_000_000_000
    limits = Limits.from_settings(load_settings().ingest)
    s = decode_sighting(
        "CAM1", msgspec.json.encode({"ts": now, "plate": "粤b·12-345"}), now, limits
    )
    assert not isinstance(s, Rejection)
    assert s.plate == "粤B12345"


def test_a_scratch_fleet_is_registered_and_removed_whole(db):
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with db.cursor() as cur:
        company = register_fleet(cur, "scratch", ["lt000000", "LT000001"], ["D0", "D1"], since)
        real = save_truck(cur, {"plate": "粤B12345", "plate_color": "yellow"})
        cur.execute(
            """SELECT t.plate, m.device_id, m.valid_from FROM trucks t
               JOIN terminals m ON m.truck_id = t.id WHERE t.company_id = %s ORDER BY 1""",
            (company,),
        )
        assert cur.fetchall() == [("LT000000", "D0", since), ("LT000001", "D1", since)]
        remove_company(cur, company)
        cur.execute("SELECT plate FROM trucks")
        assert cur.fetchall() == [(real["plate"],)]
        cur.execute("SELECT count(*) FROM terminals")
        assert cur.fetchone()[0] == 0
        cur.execute("SELECT count(*) FROM companies")
        assert cur.fetchone()[0] == 0
    db.rollback()
