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


def _teardown(exc: BaseException | None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        _pool(current_app).put(conn)


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
