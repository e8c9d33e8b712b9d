"""Database connections. psycopg2 with server-side parameters; never SQL built from strings."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from urllib.parse import urlparse, urlunparse

import psycopg2
import psycopg2.extensions
import psycopg2.extras
from psycopg2 import sql as psql

from core.config import ConfigError, Settings


class IntArray(tuple):
    """Integers to pass as one `bigint[]` parameter: `= ANY(%s)` with `IntArray(ids)`.

    psycopg2 sends a Python list as an `ARRAY[1,2,...]` constructor, which PostgreSQL parses
    and folds element by element: for the 1,000 truck ids of a batch that cost more than the
    index scan it feeds (about 5 ms of an 8 ms statement, docs/performance.md). This sends
    one array literal instead. Every element goes through `int()`, so nothing but digits and
    signs reaches the statement."""

    __slots__ = ()

    def getquoted(self) -> bytes:
        return ("'{" + ",".join(str(int(v)) for v in self) + "}'::bigint[]").encode()

    def __conform__(self, protocol):
        return self if protocol is psycopg2.extensions.ISQLQuote else None


def connect(url: str, *, application_name: str = "muck", autocommit: bool = False):
    """Open a connection; UTC session time zone so timestamps never depend on the server."""
    if not url:
        raise ConfigError("MUCK_DATABASE_URL is not set")
    conn = psycopg2.connect(url, application_name=application_name, connect_timeout=10)
    conn.autocommit = autocommit
    with conn.cursor() as cur:
        cur.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def connect_settings(settings: Settings, **kwargs):
    if not settings.database_url:
        raise ConfigError(
            "MUCK_DATABASE_URL is not set (e.g. postgresql://postgres@127.0.0.1:5432/muck); "
            "`muck demo` starts an embedded database when it is unset"
        )
    return connect(settings.database_url, **kwargs)


@contextlib.contextmanager
def transaction(conn) -> Iterator[psycopg2.extensions.cursor]:
    """A cursor inside one transaction: commit on success, roll back on any error."""
    try:
        with conn.cursor() as cur:
            yield cur
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def has_timescaledb(conn) -> bool:
    """True when the extension is installed in this database (created by the migrations)."""
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        return cur.fetchone() is not None


@contextlib.contextmanager
def consistent_snapshot(conn) -> Iterator[None]:
    """Read-only REPEATABLE READ for the block: several queries see one snapshot (e.g. a
    catalogue and its version row). Works in autocommit mode and out of it; ends with no
    transaction open."""
    autocommit = conn.autocommit
    if not autocommit:
        conn.commit()
    with conn.cursor() as cur:
        cur.execute(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            if autocommit
            else "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"
        )
    try:
        yield
    finally:
        if autocommit:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
        else:
            conn.rollback()


def database_url(url: str, dbname: str) -> str:
    """`url` pointing at another database of the same server."""
    return urlunparse(urlparse(url)._replace(path="/" + dbname))


def create_database(server_url: str, prefix: str) -> tuple[str, str]:
    """A new, empty database named `prefix` + a random suffix; returns (name, url)."""
    name = prefix + uuid.uuid4().hex[:10]
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(psql.SQL("CREATE DATABASE {}").format(psql.Identifier(name)))
    finally:
        admin.close()
    return name, database_url(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    """Drop a database made by `create_database`, ending its sessions first."""
    admin = psycopg2.connect(server_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            cur.execute(psql.SQL("DROP DATABASE IF EXISTS {}").format(psql.Identifier(name)))
    finally:
        admin.close()
