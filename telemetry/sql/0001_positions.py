"""positions: a TimescaleDB hypertable when the extension can be created, otherwise a
natively partitioned table (daily RANGE partitions managed by telemetry.partitions).
Queries are the same either way."""

COLUMNS = """
    device_id    text NOT NULL,
    fix_time     timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    truck_id     bigint,            -- NULL: unregistered terminal (black-truck evidence)
    lat          double precision NOT NULL,
    lon          double precision NOT NULL,
    speed_kmh    real,
    heading      smallint,
    altitude_m   real,
    lid          lid_state,
    lift         lift_state,
    load         load_state,
    weight_kg    real,
    acc          boolean,
    alarms       text[],
    sats         smallint,
    hdop         real,
    seq          bigint,
    PRIMARY KEY (device_id, fix_time)
"""


def _timescaledb_available(cur) -> bool:
    cur.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    if cur.fetchone() is None:
        return False
    # CREATE EXTENSION also fails when the library is not in shared_preload_libraries;
    # try it under a savepoint so the fallback still runs in this transaction.
    cur.execute("SAVEPOINT try_timescaledb")
    try:
        cur.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except Exception:
        cur.execute("ROLLBACK TO SAVEPOINT try_timescaledb")
        return False
    cur.execute("RELEASE SAVEPOINT try_timescaledb")
    return True


def apply(cur, settings) -> None:
    cur.execute("CREATE TYPE lid_state AS ENUM ('closed', 'open')")
    cur.execute("CREATE TYPE lift_state AS ENUM ('down', 'up')")
    cur.execute("CREATE TYPE load_state AS ENUM ('empty', 'half', 'full')")
    storage = settings.storage
    if _timescaledb_available(cur):
        cur.execute(f"CREATE TABLE positions ({COLUMNS})")
        cur.execute(
            "SELECT create_hypertable('positions', 'fix_time', chunk_time_interval => interval '1 day')"
        )
        cur.execute(
            "ALTER TABLE positions SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'device_id', "
            "timescaledb.compress_orderby = 'fix_time DESC')"
        )
        cur.execute(
            "SELECT add_compression_policy('positions', make_interval(days => %s))",
            (int(storage["compress_after_days"]),),
        )
        cur.execute(
            "SELECT add_retention_policy('positions', make_interval(days => %s))",
            (int(storage["retention_days"]),),
        )
    else:
        cur.execute(f"CREATE TABLE positions ({COLUMNS}) PARTITION BY RANGE (fix_time)")
    cur.execute("CREATE INDEX positions_truck_time_idx ON positions (truck_id, fix_time)")
