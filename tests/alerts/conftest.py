"""Violations to alert on, made by compliance's own writer."""

from __future__ import annotations

import datetime as dt
import itertools
import time

import pytest

from compliance.violations import EpisodeRow, ViolationWriter
from registry.service import upsert_company, upsert_truck
from tests.alerts.receiver import Receiver

_START = itertools.count(1)


@pytest.fixture
def fleet(db):
    """Two companies with a truck each: {"A": (company_id, truck_id), "B": ...}."""
    out = {}
    with db.cursor() as cur:
        for name, code, plate in (
            ("甲渣土运输公司", "91110000600037341L", "粤B20001"),
            ("乙渣土运输公司", "91440300MA5DC2XE3W", "粤B20002"),
        ):
            company = upsert_company(cur, name, code, "张三")
            out[name[0]] = (company, upsert_truck(cur, plate, company))
    db.commit()
    return {"A": out["甲"], "B": out["乙"]}


def violate(db, settings, truck_id: int, *, kind="speeding", severity="minor", district=None):
    """A new violation of `truck_id` (its `detected` event included); its id."""
    start = time.time() - 600 + next(_START)
    row = EpisodeRow(
        truck_id,
        kind,
        "over_limit",
        start,
        None,
        72.0,
        "km/h",
        severity,
        None,
        None,
        22.55,
        114.06,
        3,
        "basis",
        {"min_duration_s": 30.0},
    )
    with db.cursor() as cur:
        (vid,) = ViolationWriter(settings).write(cur, [row])
        if district:
            cur.execute("UPDATE violations SET district_code = %s WHERE id = %s", (district, vid))
    db.commit()
    return vid


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
