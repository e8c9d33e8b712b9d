"""Reviewing violations: allowed transitions only, every change on record, from the CLI too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from compliance.violations import ViolationError, change_status, get_violation, list_violations
from tests.compliance.city import LOADED, Pipeline, Trace, build_city

MUCK = str(Path(sys.executable).with_name("muck"))


@pytest.fixture
def speeding_id(db, settings):
    city = build_city(db, settings)
    trace = Trace("T1", city.base_ms).dwell(180, **LOADED).drive(1000, 0, 35, **LOADED)
    trace.drive(3000, 0, 60, **LOADED).drive(4950, 0, 35, **LOADED)
    Pipeline(settings, db).feed(trace.messages())
    (row,) = list_violations(db)
    assert row.kind == "speeding" and row.status == "new" and row.plate == "粤B10001"
    return row.id


def test_thresholds_and_legal_basis_are_stored(db, settings, speeding_id):
    # (The evidence itself is captured by the evidence package: tests/evidence/.)
    violation, events = get_violation(db, speeding_id)
    assert violation["legal_basis"] and violation["points"] == 3
    assert violation["rule_params"]["min_duration_s"] == 30.0
    assert violation["permit_no"] == "深渣准〔2026〕0001号"
    assert violation["credit_code"] == "91110000600037341L"
    assert [e["action"] for e in events] == ["detected", "ended"]


def test_review_transitions_are_checked_and_recorded(db, speeding_id):
    # opening and closing a case is a case's business (credit/cases.py, tests/credit/)
    with pytest.raises(ViolationError, match="open_case is done through a case"):
        change_status(db, speeding_id, "open_case", "officer1")
    with pytest.raises(ViolationError, match="close is done through a case"):
        change_status(db, speeding_id, "close", "officer1")
    with pytest.raises(ViolationError, match="needs a reason"):
        change_status(db, speeding_id, "dismiss", "officer1", note="  ")
    assert (
        change_status(db, speeding_id, "confirm", "officer1", note="track checked") == "confirmed"
    )
    with pytest.raises(ViolationError, match="cannot confirm a violation that is confirmed"):
        change_status(db, speeding_id, "confirm", "officer1")
    assert change_status(db, speeding_id, "dismiss", "officer2", note="GPS drift") == "dismissed"
    violation, events = get_violation(db, speeding_id)
    assert violation["status"] == "dismissed"
    assert [(e["actor"], e["action"]) for e in events[2:]] == [
        ("officer1", "confirm"),
        ("officer2", "dismiss"),
    ]
    assert events[2]["before"] == {"status": "new"} and events[2]["note"] == "track checked"
    with pytest.raises(ViolationError, match="does not exist"):
        change_status(db, 999_999, "confirm", "officer1")


def test_cli_lists_shows_and_reviews(db, settings, speeding_id):
    env = {"PATH": "/usr/bin:/bin", "MUCK_DATABASE_URL": settings.database_url}

    def muck(*args):
        return subprocess.run([MUCK, *args], capture_output=True, text=True, env=env, timeout=60)

    listed = muck("violations", "list", "--kind", "speeding")
    assert (
        listed.returncode == 0 and str(speeding_id) in listed.stdout and "粤B10001" in listed.stdout
    )
    shown = muck("violations", "show", str(speeding_id))
    assert "legal_basis" in shown.stdout and "detected" in shown.stdout
    refused = muck("violations", "dismiss", str(speeding_id))
    assert refused.returncode != 0 and "needs a reason" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = muck("violations", "dismiss", str(speeding_id), "--note", "GPS drift", "--by", "li")
    assert done.returncode == 0 and "dismissed" in done.stdout
    bad = muck("violations", "list", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "is not a time" in bad.stderr
