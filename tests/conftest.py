"""Fixtures on real services (see tests/services.py for where they come from)."""

from __future__ import annotations

import pytest
from psycopg2 import sql

from core.config import load_settings
from core.db import connect
from core.migrate import migrate
from tests.services import Broker, PostgresServer

# Tests that use any of these (directly or through another fixture) need a real PostgreSQL
# or broker; they are marked `services`, so `pytest -m "not services"` runs the rest in
# seconds on a machine with nothing installed.
SERVICE_FIXTURES = frozenset({"pg_server", "database_url", "broker", "settings", "db"})


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


@pytest.fixture(scope="session")
def pg_server():
    server = PostgresServer.start()
    yield server
    server.stop()


def migrated_database(pg_server) -> str:
    """A new database on the test server, migrated, with today's partitions."""
    url = pg_server.create_database()
    conn = connect(url)
    migrate(conn, load_settings().with_overrides())
    from telemetry.partitions import maintain

    maintain(conn, load_settings())
    conn.close()
    return url


@pytest.fixture(scope="session")
def database_url(pg_server):
    """A fresh, migrated database for this test session."""
    url = migrated_database(pg_server)
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def broker():
    broker = Broker.start()
    yield broker
    broker.stop()
    embedded = getattr(broker, "_embedded", None)
    if embedded is not None:
        embedded.stop()


@pytest.fixture
def settings(database_url, broker, monkeypatch):
    monkeypatch.setenv("MUCK_DATABASE_URL", database_url)
    monkeypatch.setenv("MUCK_MQTT_URL", broker.url)
    return load_settings()


_KEEP = ("schema_migrations",)


def truncate_all(conn) -> None:
    """Empty every table but the migration record (sessions share one migrated database)."""
    with conn.cursor() as cur:
        cur.execute(
            """SELECT c.relname FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                 AND NOT c.relispartition AND c.relname <> ALL(%s)""",
            (list(_KEEP),),
        )
        tables = [row[0] for row in cur.fetchall()]
        if tables:
            cur.execute(
                sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                    sql.SQL(", ").join(sql.Identifier(t) for t in tables)
                )
            )
    conn.commit()


@pytest.fixture
def db(database_url):
    """A connection to the session database, emptied before the test."""
    conn = connect(database_url)
    truncate_all(conn)
    yield conn
    conn.close()


def require_mosquitto(broker: Broker) -> None:
    if not broker.is_mosquitto:
        pytest.skip(f"needs Mosquitto (persistence/shared subscriptions); broker is {broker.kind}")
