"""Reads off the primary: a real streaming replica (initdb + pg_basebackup on free ports),
a real `muck collect` writing to the primary and a real `muck web` reading its dashboard
figures from the replica, with the replica's lag on /healthz."""

from __future__ import annotations

import datetime as dt
import glob
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psycopg2
import pytest

from core.config import Settings, load_settings
from core.db import connect
from core.migrate import migrate
from registry.service import bind_terminal, upsert_truck
from telemetry.contract import Topics
from telemetry.partitions import maintain
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import collector_env, fix, now_ms, publish, wait_until
from tests.services import MuckProcess, free_port, muck_collect
from web.users import create_token, create_user

T = Topics("muck/v1")
BINS = sorted(
    (p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(f"{p}/pg_basebackup")),
    reverse=True,
)
pytestmark = pytest.mark.skipif(not BINS, reason="no PostgreSQL server binaries to build a replica")


def _as_postgres(*args: str) -> list[str]:
    """initdb and the server refuse to run as root: run them as the postgres user then."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


def _run(*args: str) -> None:
    done = subprocess.run(_as_postgres(*args), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout}\n{done.stderr}"


@pytest.fixture
def primary_and_replica():
    bin_dir = BINS[0]
    base = Path(tempfile.mkdtemp(prefix="muck-test-replica-"))
    base.chmod(0o777)
    primary, replica = base / "primary", base / "replica"
    p_port, r_port = free_port(), free_port()
    _run(f"{bin_dir}/initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    with open(primary / "postgresql.conf", "a") as conf:
        conf.write(
            f"\nport = {p_port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
            "wal_level = replica\nmax_wal_senders = 4\nhot_standby = on\nfsync = off\n"
        )
    _run(f"{bin_dir}/pg_ctl", "-D", str(primary), "-l", str(base / "primary.log"), "-w", "start")
    started = [primary]
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=p_port, user="postgres", dbname="postgres")
        admin.autocommit = True
        admin.cursor().execute("CREATE DATABASE muck")
        admin.close()
        primary_url = f"postgresql://postgres@127.0.0.1:{p_port}/muck"
        conn = connect(primary_url)
        migrate(conn, load_settings())
        maintain(conn, load_settings())
        conn.close()
        _run(
            f"{bin_dir}/pg_basebackup",
            "-h",
            "127.0.0.1",
            "-p",
            str(p_port),
            "-U",
            "postgres",
            "-D",
            str(replica),
            "-R",
            "-X",
            "stream",
        )
        with open(replica / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {r_port}\n")
        _run(
            f"{bin_dir}/pg_ctl", "-D", str(replica), "-l", str(base / "replica.log"), "-w", "start"
        )
        started.append(replica)
        yield primary_url, f"postgresql://postgres@127.0.0.1:{r_port}/muck"
    finally:
        for folder in reversed(started):
            subprocess.run(
                _as_postgres(f"{bin_dir}/pg_ctl", "-D", str(folder), "-m", "immediate", "stop"),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(base, ignore_errors=True)


def _get(port: int, path: str, token: str | None = None) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _count(url: str, query: str) -> int:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(query)
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_the_dashboard_reads_from_a_streaming_replica(primary_and_replica, broker, settings):
    require_mosquitto(broker)
    primary_url, replica_url = primary_and_replica
    conn = connect(primary_url)
    with conn.cursor() as cur:
        truck = upsert_truck(cur, "粤B40001", None)
        bind_terminal(cur, "REP-1", truck, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        create_user(cur, "watcher", "correct-horse-1", "supervisor")
        token = create_token(cur, "watcher")
    conn.commit()
    conn.close()

    primary_settings = Settings(settings.sections, primary_url, broker.url, settings.source)
    collect_env = collector_env(primary_settings, broker.url)
    web_env = collector_env(primary_settings, broker.url, "[metrics]\nreplica_max_lag_s = 1.0\n")
    web_env["MUCK_DATABASE_REPLICA_URL"] = replica_url
    port = free_port()
    start = now_ms() - 60_000
    with (
        muck_collect("replica-test", collect_env),
        MuckProcess(["web", "--port", str(port)], web_env, ready="Running on") as web,
    ):
        publish(broker.url, [(T.telemetry("REP-1"), fix(start + i * 1000)) for i in range(10)])
        assert wait_until(lambda: _count(primary_url, "SELECT count(*) FROM positions") == 10)
        assert wait_until(
            lambda: _get(port, "/api/v1/overview", token)[1].get("fixes_today") == 10, timeout=20
        ), web.output()
        status, health = _get(port, "/healthz")
        assert status == 200 and health["replica"]["state"] == "ok", health

        # Replay paused: the primary has more, the dashboard (reading the replica) does not.
        replica = psycopg2.connect(replica_url)
        replica.autocommit = True
        replica.cursor().execute("SELECT pg_wal_replay_pause()")
        publish(
            broker.url, [(T.telemetry("REP-1"), fix(start + 20_000 + i * 1000)) for i in range(5)]
        )
        assert wait_until(lambda: _count(primary_url, "SELECT count(*) FROM positions") == 15)
        time.sleep(2.0)
        assert _get(port, "/api/v1/overview", token)[1]["fixes_today"] == 10
        status, health = _get(port, "/healthz")
        assert status == 503 and health["replica"]["state"] == "behind", health
        assert health["replica"]["lag_s"] > 1.0 and health["database"] == "ok"
        with replica.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'muck-web'")
            assert cur.fetchone()[0] >= 1
        replica.cursor().execute("SELECT pg_wal_replay_resume()")
        assert wait_until(
            lambda: _get(port, "/api/v1/overview", token)[1].get("fixes_today") == 15, timeout=20
        )
        assert wait_until(lambda: _get(port, "/healthz")[0] == 200, timeout=20)
        replica.close()
