"""Migrations, partitions and settings."""

from __future__ import annotations

import datetime as dt

import pytest

from core.config import ConfigError, load_settings
from core.db import connect
from core.migrate import discover, migrate
from telemetry import partitions


def test_migrate_is_idempotent_and_recorded(database_url):
    conn = connect(database_url)
    try:
        assert migrate(conn, load_settings()) == []
        with conn.cursor() as cur:
            cur.execute("SELECT package || '/' || version FROM schema_migrations ORDER BY 1")
            recorded = [row[0] for row in cur.fetchall()]
    finally:
        conn.close()
    assert recorded == sorted(f"{m.package}/{m.version}" for m in discover())
    assert "telemetry/0001_positions" in recorded


def _timescale_available(db) -> bool:
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        return cur.fetchone() is not None


def test_fallback_daily_partitions_cover_the_ingest_horizon(db):
    if _timescale_available(db):
        pytest.skip("this server has TimescaleDB; the fallback is not in use")
    with db.cursor() as cur:
        cur.execute("SELECT relkind FROM pg_class WHERE relname = 'positions'")
        assert cur.fetchone()[0] == "p"
        days = set(partitions.existing_partitions(cur))
    db.commit()
    settings = load_settings()
    today = dt.datetime.now(dt.UTC).date()
    horizon = int(settings.ingest["past_horizon_days"])
    ahead = int(settings.storage["partitions_ahead_days"])
    for offset in range(-horizon, ahead + 1):
        assert today + dt.timedelta(days=offset) in days


def test_maintenance_drops_partitions_past_retention_and_keeps_the_rest(db):
    if _timescale_available(db):
        pytest.skip("this server has TimescaleDB; retention is its policy")
    settings = load_settings()
    today = dt.datetime.now(dt.UTC).date()
    retention = int(settings.storage["retention_days"])
    old = today - dt.timedelta(days=retention + 3)
    kept = today - dt.timedelta(days=retention - 1)
    with db.cursor() as cur:
        partitions.ensure_days(cur, {old, kept})
        cur.execute(
            """INSERT INTO positions (device_id, fix_time, received_at, lat, lon)
               VALUES ('D', %s, now(), 22.5, 114.0)""",
            (dt.datetime.combine(old, dt.time(1), tzinfo=dt.UTC),),
        )
    db.commit()
    report = partitions.maintain(db, settings, today=today)
    assert report.dropped == [partitions.partition_name(old)]
    with db.cursor() as cur:
        days = set(partitions.existing_partitions(cur))
        cur.execute("SELECT count(*) FROM positions WHERE device_id = 'D'")
        assert cur.fetchone()[0] == 0
    db.commit()
    assert old not in days and kept in days
    # Running it again changes nothing.
    again = partitions.maintain(db, settings, today=today)
    assert again.created == [] and again.dropped == []


def test_timescaledb_hypertable_when_the_extension_exists(db):
    if not _timescale_available(db):
        pytest.skip("timescaledb extension is not available on this PostgreSQL server")
    with db.cursor() as cur:
        cur.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'positions'"
        )
        assert cur.fetchone() == (True,)


def test_settings_reject_unknown_keys_and_wrong_types(tmp_path):
    bad_key = tmp_path / "a.toml"
    bad_key.write_text("[ingest]\nbatch_sise = 10\n")
    with pytest.raises(ConfigError, match="ingest.batch_sise"):
        load_settings(bad_key)
    bad_type = tmp_path / "b.toml"
    bad_type.write_text('[ingest]\nbatch_size = "many"\n')
    with pytest.raises(ConfigError, match="batch_size must be int"):
        load_settings(bad_type)
    good = tmp_path / "c.toml"
    good.write_text('[city]\ntimezone = "Asia/Chongqing"\n[ingest]\nbatch_size = 500\n')
    settings = load_settings(good)
    assert settings.city["timezone"] == "Asia/Chongqing"
    assert settings.ingest["batch_size"] == 500
    assert settings.ingest["batch_max_wait_ms"] == 100  # default kept
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")


def test_mqtts_urls_and_their_tls_files():
    from core.config import MqttEndpoint

    endpoint = MqttEndpoint.parse("mqtts://collector:s3cret@broker")
    assert (endpoint.tls, endpoint.port) == (True, 8883)
    assert endpoint.safe_url() == "mqtts://collector:***@broker:8883"
    plain = load_settings()
    plain = plain.__class__(plain.sections, plain.database_url, "mqtt://broker:1883")
    assert plain.mqtt_tls_context() is None
    tls = plain.__class__(plain.sections, None, "mqtts://broker")
    assert tls.mqtt_tls_context() is not None  # the system's CAs
    missing = tls.with_overrides(mqtt={"tls_ca_file": "/nonexistent/ca.crt"})
    with pytest.raises(ConfigError, match=r"tls_ca_file = '/nonexistent/ca.crt'"):
        missing.mqtt_tls_context()
    with pytest.raises(ConfigError, match="mqtts:// for TLS"):
        MqttEndpoint.parse("http://broker")
