"""`muck loadtest` accounts for every message on the real broker and database.

Speed is a benchmark (docs/performance.md), not a test: these runs are short and slow, and
check the bookkeeping — nothing lost, duplicates stored once and counted, latency present,
the report written — and that a loss is really detected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.db import connect
from simulators.loadcompare import compare
from simulators.loadreport import PLOTS, write_report
from simulators.loadtest import (
    LoadtestError,
    LoadtestOptions,
    clean_leftovers,
    real_trucks,
    run_loadtest,
)
from tests.conftest import migrated_database, require_mosquitto
from tests.mqtt_helpers import count, running_collector

MUCK = str(Path(sys.executable).with_name("muck"))
PNG = b"\x89PNG\r\n\x1a\n"


def _leftovers(db) -> int:
    return count(db, "SELECT count(*) FROM positions WHERE device_id LIKE 'LT-%%'")


def test_short_load_run_accounts_for_every_message(settings, broker, db, tmp_path):
    """A collector subprocess like production's; 3 % of the messages published twice."""
    options = LoadtestOptions(
        rate=1500,
        duration_s=3,
        trucks=60,
        publishers=2,
        collectors=1,
        duplicate_pct=3.0,
        ceiling_messages=5000,
    )
    lines: list[str] = []
    result = run_loadtest(settings, options, work_dir=tmp_path, status=lines.append)

    assert result.publisher_errors == []
    assert result.sent == result.unique + result.duplicates_sent
    assert result.unique > 3000
    assert result.lost == 0 and result.lost_examples == [], result.verdict_line()
    assert result.stored == result.unique
    # Each copy is stored once, and the collector counted it as a duplicate.
    assert result.duplicates_sent > 0
    assert result.duplicates_once == result.duplicates_sent
    assert result.duplicates_more == result.duplicates_missing == result.stored_twice == 0
    assert result.collector_duplicates is not None
    assert result.collector_duplicates >= result.duplicates_sent
    assert result.quarantined == {}
    lat = result.latency_ms
    assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert result.latency_per_s and result.stored_per_s and result.publish_per_s
    assert result.ceiling_rate and result.ceiling_rate > 0
    roles = {p.role for p in result.processes}
    assert {"publisher", "collector", "postgres backend", "loadtest"} <= roles
    if broker.kind == "mosquitto":
        assert "mosquitto" in roles
    assert any(line.startswith("[load") for line in lines), "no live status line"

    report = write_report(result, tmp_path / "report")
    text = report.read_text()
    for name in PLOTS:
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG)
        assert f"]({name})" in text
    assert "| lost | **0** |" in text
    assert "p99" in text and "whole machine" in text
    # The run removed its rows.
    assert _leftovers(db) == 0
    assert count(db, "SELECT count(*) FROM black_trucks WHERE key LIKE 'LT-%%'") == 0


def test_lost_messages_are_detected(settings, db, tmp_path):
    """Messages published to a topic nobody stores must show up as lost, and fail the run."""
    options = LoadtestOptions(
        rate=800, duration_s=2, trucks=20, publishers=1, lose_pct=5.0, ceiling_messages=0
    )
    with running_collector(settings):
        result = run_loadtest(settings, options, work_dir=tmp_path)
    assert result.voided > 0
    assert result.lost == result.voided
    assert result.stored == result.unique - result.voided
    assert result.lost_examples
    ok, reasons = result.verdict()
    assert not ok
    assert any("lost" in r for r in reasons)
    assert result.verdict_line().startswith("FAIL")
    # The in-process collector is no `muck collect` process: the report says so.
    assert any("no `muck collect` process" in note for note in result.notes)
    text = write_report(result, tmp_path / "r").read_text()
    assert "FAIL" in text and "first missing: LT-" in text
    assert _leftovers(db) == 0


def test_registered_run_cleans_up_with_clean(settings, db, tmp_path):
    """--registered puts the rules on the load's devices; --keep leaves the rows and
    `--clean` removes them, the scratch company included."""
    options = LoadtestOptions(
        rate=400,
        duration_s=2,
        trucks=20,
        publishers=1,
        collectors=1,
        registered=True,
        duplicate_pct=0,
        ceiling_messages=0,
        keep=True,
    )
    result = run_loadtest(settings, options, work_dir=tmp_path)
    assert result.lost == 0 and result.stored == result.unique, result.verdict_line()
    assert count(db, "SELECT count(*) FROM companies WHERE name LIKE 'loadtest %%'") == 1
    # Stored as the scratch trucks' fixes, so the rules ran on them.
    assert (
        count(
            db,
            "SELECT count(*) FROM positions WHERE device_id LIKE 'LT-%%' AND truck_id IS NULL",
        )
        == 0
    )
    assert _leftovers(db) == result.stored
    assert real_trucks(db) == 0  # the load's trucks are not real ones
    assert any("--keep" in note for note in result.notes)

    clean_leftovers(settings)
    assert _leftovers(db) == 0
    assert count(db, "SELECT count(*) FROM companies WHERE name LIKE 'loadtest %%'") == 0
    assert count(db, "SELECT count(*) FROM trucks") == 0


@pytest.fixture
def reference_database(pg_server):
    """A second migrated database, set up like the (emptied) session database."""
    url = migrated_database(pg_server)
    yield url
    pg_server.drop_database(url)


def test_two_sharing_collectors_one_killed_match_one_collector(
    settings, broker, db, reference_database, tmp_path
):
    """`--collectors 2 --kill-collector-at --reference-database`: two collectors share the
    subscription (Mosquitto's round-robin), the first is SIGKILLed mid-stream and restarted,
    and a third collector with its own subscription stores the same stream into a reference
    database. Rows and standing violations must be the same in both, nothing lost."""
    require_mosquitto(broker)
    # Loaded trucks without a permit: a violation per truck within seconds, not minutes.
    config = tmp_path / "fast.toml"
    config.write_text("[rules.no_valid_permit]\nmin_duration_s = 2.0\n")
    options = LoadtestOptions(
        config_path=str(config),
        rate=600,
        duration_s=8,
        trucks=40,
        publishers=1,
        collectors=2,
        registered=True,
        duplicate_pct=1.0,
        ceiling_messages=0,
        keep=True,
        reference_database=reference_database,
        kill_collector_at_s=3.0,
        restart_after_s=2.0,
    )
    result = run_loadtest(settings, options, work_dir=tmp_path)
    assert [what.split()[0] for _, what in result.collector_events] == ["SIGKILL", "restarted"]
    assert result.lost == 0 and result.stored_twice == 0, result.verdict_line()
    assert result.stored == result.unique == result.reference_stored
    c = result.comparison
    assert c is not None
    assert c.same_rows, (c.rows_only_main, c.rows_only_reference)
    assert c.main.standing, "the load raised no violation: nothing was compared"
    assert c.same_violations, (c.violations_only_main, c.violations_only_reference)
    assert result.verdict()[0], result.verdict_line()
    text = write_report(result, tmp_path / "report").read_text()
    assert "| rows vs reference | **the same**" in text
    assert "SIGKILL loadtest-collector-0" in text

    # The comparison can fail: one fix less and one violation withdrawn in the reference.
    devices = [f"LT-{result.run}-{i:05d}" for i in range(options.trucks)]
    ref = connect(reference_database)
    with ref.cursor() as cur:
        cur.execute(
            "DELETE FROM positions WHERE ctid = (SELECT ctid FROM positions "
            "WHERE device_id = %s LIMIT 1)",
            (devices[0],),
        )
        cur.execute(
            "UPDATE violations SET status = 'withdrawn' WHERE id = (SELECT min(id) FROM violations)"
        )
    ref.commit()
    tampered = compare(db, ref, devices, result.started - 10)
    assert not tampered.same_rows and len(tampered.rows_only_main) == 1
    assert len(tampered.violations_only_main) == 1 and not tampered.violations_only_reference
    assert tampered.reference.withdrawn == c.reference.withdrawn + 1
    ref.close()
    clean_leftovers(settings)


def test_refuses_a_database_with_real_trucks_without_yes(settings, db):
    with db.cursor() as cur:
        cur.execute("INSERT INTO companies (name) VALUES ('真实运输公司') RETURNING id")
        cur.execute(
            "INSERT INTO trucks (plate, company_id) VALUES ('粤B12345', %s)", (cur.fetchone()[0],)
        )
    db.commit()
    assert real_trucks(db) == 1
    env = {**os.environ, "MUCK_DATABASE_URL": settings.database_url}
    done = subprocess.run(
        [MUCK, "loadtest", "--rate", "100", "--duration", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert "registered trucks" in done.stderr and "--yes" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"rate": 0}, "--rate must be positive"),
        ({"trucks": 10, "rate": 5000}, "--trucks 50 or more"),
        ({"publishers": 5, "trucks": 4, "rate": 10}, "--publishers cannot exceed"),
        ({"duplicate_pct": 80}, "--duplicate-pct must be between"),
    ],
)
def test_bad_options_are_clear_errors(changes, message):
    options = LoadtestOptions(**{"rate": 100.0, "duration_s": 1.0, **changes})
    with pytest.raises(LoadtestError, match=message.replace("-", r"\-")):
        options.check()


def test_cli_rejects_bad_options_without_a_traceback(settings):
    done = subprocess.run(
        [MUCK, "loadtest", "--rate", "5000", "--duration", "1", "--trucks", "3"],
        capture_output=True,
        text=True,
        env=dict(os.environ),
        timeout=60,
    )
    assert done.returncode == 2
    assert "--trucks 50 or more" in done.stderr
    assert "Traceback" not in done.stderr
