"""Nothing is lost when the collector is killed, the database stops, or the broker restarts."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import uuid

import pytest

from core.config import load_settings
from core.db import connect
from core.migrate import migrate
from telemetry.contract import Topics
from telemetry.partitions import maintain
from tests.conftest import require_mosquitto
from tests.mqtt_helpers import count, fix, now_ms, publish, running_collector, wait_until
from tests.services import muck_collect

T = Topics("muck/v1")


def stream(devices: int, per_device: int, start_ms: int) -> list[tuple[str, bytes]]:
    return [
        (T.telemetry(f"R{d:04d}"), fix(start_ms + i * 1000, lat=22.5 + d * 1e-3, seq=i))
        for i in range(per_device)
        for d in range(devices)
    ]


def publish_paced(url: str, messages: list, per_second: int) -> None:
    """Publish at about `per_second` messages/s (one connection) and wait for every PUBACK."""
    step = max(1, per_second // 10)

    def paced():
        for i in range(0, len(messages), step):
            yield from messages[i : i + step]
            time.sleep(0.1)

    publish(url, paced())


def stored(conn) -> int:
    return count(conn, "SELECT count(*) FROM positions")


def test_sigkill_mid_stream_then_restart_stores_every_message_once(settings, broker, db):
    # amqtt (the embedded demo broker) loses part of what is queued for a disconnected
    # persistent session; this guarantee needs a real broker.
    require_mosquitto(broker)
    env = {**os.environ, "MUCK_DATABASE_URL": settings.database_url, "MUCK_MQTT_URL": broker.url}
    client_id = "kill-" + uuid.uuid4().hex[:6]
    messages = stream(devices=100, per_device=100, start_ms=now_ms() - 3_600_000)
    first = muck_collect(client_id, env)
    publisher = threading.Thread(target=publish, args=(broker.url, messages))
    publisher.start()
    assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") > 1000, timeout=60)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    killed_at = count(db, "SELECT count(*) FROM positions")
    publisher.join()
    second = muck_collect(client_id, env)
    try:
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions") == len(messages), timeout=90
        ), f"stored {stored(db)} of {len(messages)}"
    finally:
        second.stop()
    assert killed_at < len(messages), "the kill came too late to test anything"
    assert count(db, "SELECT count(DISTINCT (device_id, seq)) FROM positions") == len(messages)
    assert count(db, "SELECT count(*) FROM quarantine") == 0


@pytest.fixture
def stoppable_database():
    """A PostgreSQL of the test's own (pgserver) that the test can stop and start."""
    import pgserver

    folder = tempfile.mkdtemp(prefix="muck-outage-pg-")
    server = pgserver.get_server(folder, cleanup_mode="stop")
    url = server.get_uri()
    conn = connect(url)
    migrate(conn, load_settings())
    maintain(conn, load_settings())
    conn.close()

    def restart_after(seconds: float) -> None:
        server.cleanup()  # pg_ctl stop
        time.sleep(seconds)
        pgserver.get_server(folder, cleanup_mode="stop")

    yield url, restart_after
    pgserver.get_server(folder, cleanup_mode="stop").cleanup()


@pytest.mark.parametrize("client", ["lean", "paho"])
def test_database_outage_loses_nothing(broker, stoppable_database, monkeypatch, client):
    url, restart_after = stoppable_database
    monkeypatch.setenv("MUCK_DATABASE_URL", url)
    monkeypatch.setenv("MUCK_MQTT_URL", broker.url)
    settings = load_settings().with_overrides(
        ingest={"retry_initial_s": 0.2, "retry_max_s": 1.0}, mqtt={"client": client}
    )
    messages = stream(devices=20, per_device=150, start_ms=now_ms() - 3_600_000)
    with running_collector(settings) as collector:
        # Spread the stream over ~6 s so that the outage falls in the middle of it.
        publisher = threading.Thread(target=publish_paced, args=(broker.url, messages, 500))
        publisher.start()
        time.sleep(1.0)
        restart_after(4.0)
        publisher.join()
        conn = connect(url)
        try:
            assert wait_until(
                lambda: count(conn, "SELECT count(*) FROM positions") == len(messages), timeout=60
            )
        finally:
            conn.close()
        assert collector.stats.snapshot()["db_errors"] >= 1, "the outage was not seen"


@pytest.mark.parametrize("client", ["lean", "paho"])
def test_messages_published_while_collector_is_down_survive_a_broker_restart(
    settings, broker, db, client
):
    require_restartable(broker)
    settings = settings.with_overrides(mqtt={"client": client})
    client_id = "offline-" + uuid.uuid4().hex[:6]
    with running_collector(settings, client_id=client_id):
        pass  # creates the persistent session and its subscriptions
    messages = stream(devices=50, per_device=60, start_ms=now_ms() - 3_600_000)
    publish(broker.url, messages)  # 3,000 > Mosquitto's default queue limit of 1,000
    broker.restart()
    with running_collector(settings, client_id=client_id):
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions") == len(messages), timeout=60
        ), f"stored {stored(db)} of {len(messages)}"


def require_restartable(broker) -> None:
    require_mosquitto(broker)
    if broker.kind != "mosquitto":
        pytest.skip("needs a broker this test can restart")


@pytest.mark.parametrize("client", ["lean", "paho"])
def test_collector_reconnects_after_a_broker_restart(settings, broker, db, client):
    require_restartable(broker)
    settings = settings.with_overrides(mqtt={"client": client})
    with running_collector(settings) as collector:
        publish(broker.url, stream(devices=10, per_device=10, start_ms=now_ms() - 600_000))
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 100)
        broker.restart()
        assert collector.wait_connected(30), "collector did not reconnect"
        time.sleep(0.3)
        publish(broker.url, stream(devices=10, per_device=10, start_ms=now_ms() - 300_000))
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 200, timeout=30)


def test_shared_subscription_splits_the_load_without_loss(settings, broker, db):
    require_mosquitto(broker)
    shared = settings.with_overrides(mqtt={"shared_group": "collectors"})
    messages = stream(devices=40, per_device=50, start_ms=now_ms() - 3_600_000)
    with running_collector(shared) as a, running_collector(shared) as b:
        publish(broker.url, messages)
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == len(messages))
        received_a, received_b = a.stats.snapshot()["received"], b.stats.snapshot()["received"]
    assert received_a > 0 and received_b > 0
    assert received_a + received_b == len(messages)


def test_mqtt5_persistent_session_across_collector_restart(settings, broker, db):
    require_mosquitto(broker)
    v5 = settings.with_overrides(mqtt={"protocol": "5"})
    client_id = "v5-" + uuid.uuid4().hex[:6]
    with running_collector(v5, client_id=client_id):
        publish(broker.url, stream(devices=5, per_device=10, start_ms=now_ms() - 600_000))
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 50)
    publish(broker.url, stream(devices=5, per_device=10, start_ms=now_ms() - 300_000))
    with running_collector(v5, client_id=client_id):
        assert wait_until(lambda: count(db, "SELECT count(*) FROM positions") == 100)
