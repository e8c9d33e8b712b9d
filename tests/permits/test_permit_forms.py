"""Permit files as bureaus write them: the company by credit code or by registry id, hours as
"21:00-05:00" or ["21:00", "05:00"]."""

from __future__ import annotations

import json

import pytest

from permits.io import PermitImportError, parse_permits_csv, parse_permits_json
from permits.store import get_permit, import_permits
from tests.permits.test_permits import CREDIT, make_registry

pytestmark = pytest.mark.services
NIGHT = [{"days": [1, 2, 3, 4, 5, 6, 7], "start": "21:00", "end": "05:00"}]


def _permit(number: str, **fields) -> dict:
    return {
        "number": number,
        "trucks": ["粤B10001"],
        "origin_site": "SITE-A",
        "disposal_sites": ["DISP-1"],
        "valid_from": "2026-03-01",
        "valid_to": "2026-03-31",
        **fields,
    }


def test_company_by_credit_code_or_id_and_hours_in_either_form(db):
    ids = make_registry(db)
    records = parse_permits_json(
        json.dumps(
            [
                _permit("P1", company=CREDIT, operating_hours="21:00-05:00"),
                _permit("P2", company=str(ids["company"]), operating_hours=["21:00", "05:00"]),
                _permit("P3", company_id=ids["company"], operating_hours=[["21:00", "05:00"]]),
                _permit("P4", company_credit_code=CREDIT, operating_hours=NIGHT),
            ]
        )
    )
    assert import_permits(db, records) == {"inserted": 4, "updated": 0}
    for number in ("P1", "P2", "P3", "P4"):
        permit = get_permit(db, number)
        assert (permit.company_id, permit.operating_hours) == (ids["company"], NIGHT), number


def test_unknown_company_id_and_bad_hours_are_named(db):
    make_registry(db)
    records = parse_permits_csv(
        "number,company_id,trucks,origin_site,disposal_sites,valid_from,valid_to\n"
        "P9,999999,粤B10001,SITE-A,DISP-1,2026-03-01,2026-03-31\n"
    )
    with pytest.raises(PermitImportError) as info:
        import_permits(db, records)
    assert info.value.errors == ["line 2, field 'company_id': no registered company has id 999999"]
    with pytest.raises(PermitImportError) as info:
        parse_permits_json(json.dumps([_permit("P8", company=CREDIT, operating_hours=["9pm"])]))
    assert "expected" in info.value.errors[0] and '"07:00-09:00"' in info.value.errors[0]
