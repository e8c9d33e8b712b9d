"""Request-scoped database connections from a small per-process pool.

`get_db()` hands the request a connection (UTC, not autocommit); teardown rolls back
anything left open and returns it to the pool, so no request leaves a transaction idle.
"""

from __future__ import annotations

import os
import secrets
import threading

from flask import Flask, current_app, g

from core.db import connect


class ConnectionPool:
    """At most `size` idle connections kept; more are opened under load and closed after."""

    def __init__(self, url: str, size: int = 8) -> None:
        self.url = url
        self.size = size
        self._idle: list = []
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def get(self):
        with self._lock:
            if self._pid != os.getpid():  # forked (gunicorn --preload): never share sockets
                self._idle, self._pid = [], os.getpid()
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return connect(self.url, application_name="muck-web")

    def put(self, conn) -> None:
        if conn.closed:
            return
        try:
            conn.rollback()
        except Exception:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < self.size and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


def _pool(app: Flask) -> ConnectionPool:
    pool = app.extensions.get("muck_pool")
    if pool is None:
        pool = app.extensions["muck_pool"] = ConnectionPool(app.config["DATABASE_URL"])
    return pool


def get_db():
    """The request's connection (opened on first use)."""
    if "db" not in g:
        g.db = _pool(current_app).get()
    return g.db


def _replica_pool(app: Flask) -> ConnectionPool | None:
    url = app.config.get("DATABASE_REPLICA_URL")
    if not url:
        return None
    pool = app.extensions.get("muck_replica_pool")
    if pool is None:
        pool = app.extensions["muck_replica_pool"] = ConnectionPool(url)
    return pool


def get_read_db():
    """The request's connection for reads that may lag a little (the dashboard's lists and
    maps, exports): the streaming replica when MUCK_DATABASE_REPLICA_URL is set, else the
    primary. Never write through it; a replica is read-only and refuses."""
    pool = _replica_pool(current_app)
    if pool is None:
        return get_db()
    if "read_db" not in g:
        g.read_db = pool.get()
    return g.read_db


# How far a hot standby is behind: zero when it has replayed all it received (an idle
# primary would otherwise look ever more behind), else the age of the last replayed commit.
_REPLICA_LAG = """
SELECT pg_is_in_recovery(),
       CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END
"""


def replica_status() -> dict | None:
    """None without a replica; else its state (`ok`, `behind`, `not_a_replica`,
    `unreachable`) and lag in seconds, for /healthz, /metrics and the health page."""
    pool = _replica_pool(current_app)
    if pool is None:
        return None
    max_lag = float(current_app.config["MUCK_SETTINGS"]["metrics"]["replica_max_lag_s"])
    try:
        conn = get_read_db()
        with conn.cursor() as cur:
            cur.execute(_REPLICA_LAG)
            in_recovery, lag = cur.fetchone()
        conn.rollback()
    except Exception as exc:  # noqa: BLE001 - reported, the primary still serves
        g.pop("read_db", None)
        return {"state": "unreachable", "lag_s": None, "error": type(exc).__name__}
    if not in_recovery:
        return {"state": "not_a_replica", "lag_s": None}
    lag = float(lag or 0.0)
    return {"state": "ok" if lag <= max_lag else "behind", "lag_s": round(lag, 3)}


def _teardown(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        _pool(current_app).put(conn)
    read = g.pop("read_db", None)
    if read is not None:
        pool = _replica_pool(current_app)
        if pool is not None:
            pool.put(read)


def init_app(app: Flask) -> None:
    if not app.config.get("DATABASE_URL"):
        from core.config import ConfigError

        raise ConfigError("MUCK_DATABASE_URL is not set")
    app.teardown_appcontext(_teardown)


def shared_secret(app: Flask) -> str:
    """The session-signing key shared by every worker: generated once, kept in web_secret."""
    conn = _pool(app).get()
    try:
        with conn.cursor() as cur:
            cur.execute(
                "INSERT INTO web_secret (secret_key) VALUES (%s) ON CONFLICT (id) DO NOTHING",
                (secrets.token_hex(32),),
            )
            cur.execute("SELECT secret_key FROM web_secret")
            key = cur.fetchone()[0]
        conn.commit()
        return key
    finally:
        _pool(app).put(conn)
