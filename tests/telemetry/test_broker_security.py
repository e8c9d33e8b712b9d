"""Broker security on the production configuration (config/mosquitto.prod.conf): accounts
provisioned in the registry, files written by the real `muck broker sync`, a real Mosquitto,
a real `muck collect` logging in with its own account, and a TLS listener on a certificate
made here."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from registry.accounts import (
    ensure_service,
    hash_password,
    list_accounts,
    provision,
    revoke,
    rotate,
    verify_password,
)
from registry.service import RegistryError, upsert_truck
from telemetry.broker_auth import render_acl
from telemetry.contract import Topics
from tests.mqtt_helpers import collector_env, count, fix, now_ms, wait_until
from tests.services import MUCK, ROOT, Broker, MuckProcess, free_port, muck_collect

pytestmark = pytest.mark.skipif(not shutil.which("mosquitto"), reason="needs mosquitto")
TOPICS = Topics("muck/v1")


def test_mosquitto_passwd_hashes_and_ours_are_the_same_format(tmp_path):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", passwd, "alice", "s3cret"], check=True)
    theirs = passwd.read_text().strip().split(":", 1)[1]
    assert theirs.startswith("$7$")
    assert verify_password("s3cret", theirs)
    assert not verify_password("S3cret", theirs)
    ours = hash_password("s3cret")
    assert ours.split("$")[:3] == theirs.split("$")[:3]  # $7$101$
    assert verify_password("s3cret", ours) and not verify_password("other", ours)
    # mosquitto_passwd reads a file of our hashes (it rewrites the whole file on -b).
    passwd.write_text(f"bob:{ours}\n")
    subprocess.run(["mosquitto_passwd", "-b", passwd, "carol", "x"], check=True)
    assert f"bob:{ours}" in passwd.read_text()


def test_the_production_config_delivers_like_the_tested_one():
    """The delivery settings the resilience tests rely on are the production broker's too."""

    def settings(name: str) -> dict[str, str]:
        wanted = (
            "max_inflight_messages",
            "max_queued_messages",
            "max_queued_bytes",
            "queue_qos0_messages",
            "persistence",
            "autosave_interval",
            "persistent_client_expiration",
            "set_tcp_nodelay",
            "max_packet_size",
        )
        found = {}
        for line in (ROOT / "config" / name).read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in wanted:
                found[key] = value
        return found

    prod = settings("mosquitto.prod.conf")
    assert len(prod) == 9
    assert prod == settings("mosquitto.conf")
    text = (ROOT / "config" / "mosquitto.prod.conf").read_text()
    assert "allow_anonymous false" in text and "\nallow_anonymous true" not in text
    assert "\npattern " not in text


def test_accounts_in_the_registry(db):
    with db.cursor() as cur:
        upsert_truck(cur, "粤B10001", None)
        made = provision(cur, "DEV-1", "terminal", plate="粤B10001")
        cur.execute(
            "SELECT device_id, truck_id IS NOT NULL FROM terminals WHERE id = %s",
            (made.terminal_id,),
        )
        assert cur.fetchone() == ("DEV-1", True)
        cur.execute("SELECT password_hash FROM broker_accounts WHERE username = 'DEV-1'")
        stored = cur.fetchone()[0]
        assert made.password not in stored and verify_password(made.password, stored)
        with pytest.raises(RegistryError, match="exists"):
            provision(cur, "DEV-1", "terminal")
        with pytest.raises(RegistryError, match="only a terminal"):
            provision(cur, "CAM-1", "camera", plate="粤B10001")
        with pytest.raises(RegistryError, match="1-64 characters"):
            provision(cur, "dev/#", "terminal")
        with pytest.raises(RegistryError, match="no registered truck"):
            provision(cur, "DEV-2", "terminal", plate="粤B99999")
        assert revoke(cur, "DEV-1") is True and revoke(cur, "DEV-1") is False
        again = rotate(cur, "DEV-1")
        assert again.password != made.password
        assert [a["revoked_at"] for a in list_accounts(cur)] == [None]
        assert ensure_service(cur, "collector", "collector", "pw-one-two-three") is True
        assert ensure_service(cur, "collector", "collector", "pw-one-two-three") is False
        assert ensure_service(cur, "collector", "collector", "another-password") is True
        with pytest.raises(RegistryError, match="provisioned"):
            ensure_service(cur, "DEV-9", "terminal", "x")
    db.rollback()


def test_a_camera_gets_no_telemetry_rights_in_the_acl():
    accounts = [
        {"username": "CAM-7", "kind": "camera", "password_hash": "h"},
        {"username": "DEV-7", "kind": "terminal", "password_hash": "h"},
    ]
    import datetime as dt

    acl = render_acl(accounts, TOPICS, now=dt.datetime.now(dt.UTC))
    camera = acl.split("user CAM-7\n")[1].split("\n\n")[0]
    assert camera == "topic write muck/v1/checkpoints/CAM-7/sightings"
    terminal = acl.split("user DEV-7\n")[1].split("\n\n")[0].splitlines()
    assert terminal == [
        "topic write muck/v1/trucks/DEV-7/telemetry",
        "topic write muck/v1/trucks/DEV-7/status",
    ]


# ---------------------------------------------------------------------- the real broker


class Client:
    """A paho MQTT 3.1.1 client that records whether the broker accepted it."""

    def __init__(
        self, port: int, username: str | None, password: str | None, *, ca: Path | None = None
    ) -> None:
        self.accepted: bool | None = None
        self.reason = None
        self._done = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id="sec-" + uuid.uuid4().hex[:8]
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self._done.set()
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self._done.wait(10)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        self.accepted = not reason_code.is_failure
        self.reason = reason_code
        self._done.set()

    def publish(self, topic: str, payload: bytes) -> None:
        assert self.accepted, f"not connected: {self.reason}"
        self.client.publish(topic, payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _refused(port: int, username: str | None, password: str | None) -> bool:
    client = Client(port, username, password)
    client.close()
    return client.accepted is False


def _muck(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([MUCK, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _password(output: str) -> str:
    return output.split("password: ", 1)[1].strip()


@pytest.fixture
def secured(db, settings):
    workdir = Path(tempfile.mkdtemp(prefix="muck-test-prodmqtt-"))
    env_for_cert = collector_env(settings, "mqtt://unused:1")
    _muck(env_for_cert, "broker", "cert", "--dir", str(workdir), "--host", "127.0.0.1")
    env = collector_env(settings, "mqtt://unused:1")
    env.update(
        MUCK_BROKER_PASSWORD_FILE=str(workdir / "passwd"),
        MUCK_BROKER_ACL_FILE=str(workdir / "acl"),
        MUCK_BROKER_COLLECTOR_PASSWORD="collector-secret-for-tests",
        MUCK_BROKER_GATEWAY_PASSWORD="gateway-secret-for-tests",
    )
    with db.cursor() as cur:
        upsert_truck(cur, "粤B20001", None)
        upsert_truck(cur, "粤B20002", None)
    db.commit()
    passwords = {
        "DEV-A": _password(_muck(env, "device", "provision", "DEV-A", "--plate", "粤B20001")),
        "DEV-B": _password(_muck(env, "device", "provision", "DEV-B", "--plate", "粤B20002")),
        "CAM-1": _password(_muck(env, "device", "provision", "CAM-1", "--kind", "camera")),
    }
    synced = _muck(env, "broker", "sync", "--accounts-from-env")
    assert "5 active accounts (camera=1, collector=1, gateway=1, terminal=2)" in synced
    broker = Broker.start_production(workdir)
    (workdir / "mosquitto.pid").write_text(str(broker.process.pid))
    try:
        yield broker, env, passwords, workdir
    finally:
        broker.stop()


def test_the_production_broker_enforces_accounts_and_topics(secured, db):
    broker, env, passwords, workdir = secured
    port = broker.port
    assert _refused(port, None, None), "anonymous client accepted"
    assert _refused(port, "DEV-A", "wrong-password")
    assert _refused(port, "collector", "")

    collector_url = f"mqtt://collector:collector-secret-for-tests@127.0.0.1:{port}"
    collect_env = {**env, "MUCK_MQTT_URL": collector_url}
    with muck_collect("sec-collector", collect_env):
        time.sleep(0.3)
        t0 = now_ms()
        dev_a = Client(port, "DEV-A", passwords["DEV-A"])
        camera = Client(port, "CAM-1", passwords["CAM-1"])
        sighting = json.dumps({"ts": t0, "plate": "粤B77777"}).encode()
        # Forbidden first: a message the broker let through would be stored before the
        # allowed ones that come after it on the same connection.
        dev_a.publish(TOPICS.telemetry("DEV-B"), fix(t0))  # as another device
        dev_a.publish(TOPICS.sightings("CAM-1"), sighting)  # a terminal posing as a camera
        camera.publish(TOPICS.telemetry("CAM-1"), fix(t0))  # a camera sending telemetry
        camera.publish(TOPICS.telemetry("DEV-A"), fix(t0 + 1))
        dev_a.publish(TOPICS.telemetry("DEV-A"), fix(t0 + 2))
        camera.publish(
            TOPICS.sightings("CAM-1"), json.dumps({"ts": t0, "plate": "粤B20002"}).encode()
        )
        dev_a.close()
        camera.close()
        assert wait_until(
            lambda: (
                count(db, "SELECT count(*) FROM positions WHERE device_id = 'DEV-A'") >= 1
                and count(db, "SELECT count(*) FROM sightings") >= 1
            )
        )
        time.sleep(0.5)
        with db.cursor() as cur:
            cur.execute(
                "SELECT device_id, (extract(epoch FROM fix_time) * 1000)::bigint FROM positions"
            )
            assert cur.fetchall() == [("DEV-A", t0 + 2)]
            cur.execute("SELECT camera_id, plate FROM sightings")
            assert cur.fetchall() == [("CAM-1", "粤B20002")]
            cur.execute("SELECT count(*) FROM quarantine")
            assert cur.fetchone()[0] == 0
        db.commit()

        # A terminal cannot read what others publish (only collectors subscribe).
        spy_messages: list[str] = []
        spy = Client(port, "DEV-B", passwords["DEV-B"])
        spy.client.on_message = lambda c, u, m: spy_messages.append(m.topic)
        spy.client.subscribe("muck/v1/#", qos=1)
        time.sleep(0.3)
        Client(port, "DEV-A", passwords["DEV-A"]).publish(TOPICS.telemetry("DEV-A"), fix(t0 + 3))
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = 'DEV-A'") == 2
        )
        assert spy_messages == []
        spy.close()

        # Over TLS, with the certificate checked against the CA made for the test.
        tls = Client(broker.tls_port, "DEV-A", passwords["DEV-A"], ca=workdir / "ca.crt")
        assert tls.accepted, tls.reason
        tls.publish(TOPICS.telemetry("DEV-A"), fix(t0 + 4))
        tls.close()
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = 'DEV-A'") == 3
        )
        assert Client(broker.tls_port, "DEV-A", "wrong", ca=workdir / "ca.crt").accepted is False

    # Revocation and rotation reach the broker with a sync and a SIGHUP.
    assert not _refused(port, "DEV-B", passwords["DEV-B"])
    _muck(env, "device", "revoke", "DEV-B")
    old_a = passwords["DEV-A"]
    new_a = _password(_muck(env, "device", "rotate", "DEV-A"))
    out = _muck(env, "broker", "sync", "--reload-pid-file", str(workdir / "mosquitto.pid"))
    assert "SIGHUP" in out
    assert wait_until(lambda: _refused(port, "DEV-B", passwords["DEV-B"]), timeout=10)
    assert _refused(port, "DEV-A", old_a)
    assert not _refused(port, "DEV-A", new_a)
    assert "user DEV-B" not in (workdir / "acl").read_text()
    assert "DEV-B:" not in (workdir / "passwd").read_text()


def test_a_collector_logs_in_over_tls_and_refuses_a_broker_it_cannot_verify(secured, db, settings):
    """The lean collector on the TLS listener (mqtts://, the broker's certificate checked
    against the CA made here) stores what a terminal publishes over TLS; with a CA that did
    not sign the broker's certificate it never connects."""
    broker, env, passwords, workdir = secured
    url = f"mqtts://collector:collector-secret-for-tests@127.0.0.1:{broker.tls_port}"
    tls_env = collector_env(settings, url, f'[mqtt]\ntls_ca_file = "{workdir / "ca.crt"}"\n')
    tls_env.update({k: v for k, v in env.items() if k.startswith("MUCK_BROKER_")})
    with muck_collect("sec-tls-collector", tls_env) as collector:
        assert any("connected to 127.0.0.1" in line for line in collector.log)
        t0 = now_ms()
        terminal = Client(broker.tls_port, "DEV-A", passwords["DEV-A"], ca=workdir / "ca.crt")
        # Enough fixes for several TLS records in one read (the reader drains OpenSSL's
        # buffer, which select() does not see).
        for i in range(300):
            terminal.client.publish(TOPICS.telemetry("DEV-A"), fix(t0 + i), qos=1)
        terminal.publish(TOPICS.telemetry("DEV-A"), fix(t0 + 300))
        terminal.close()
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = 'DEV-A'") == 301
        ), collector.log[-5:]

    other_ca = Path(tempfile.mkdtemp(prefix="muck-test-otherca-"))
    _muck(env, "broker", "cert", "--dir", str(other_ca), "--host", "127.0.0.1")
    wrong = collector_env(settings, url, f'[mqtt]\ntls_ca_file = "{other_ca / "ca.crt"}"\n')
    process = MuckProcess(
        ["collect", "--client-id", "sec-tls-wrong", "--no-maintenance"],
        wrong,
        ready="TLS handshake failed",
    )
    try:
        assert any("certificate verify failed" in line for line in process.log), process.log
        assert not any("connected to" in line for line in process.log)
    finally:
        process.stop()


def test_the_jt808_gateway_publishes_over_tls(secured, db, settings):
    """`muck gateway jt808` on the broker's TLS listener with its own account: a terminal's
    report is acknowledged (after the broker's PUBACK) and stored by a TLS collector."""
    from simulators.jt808 import TerminalClient, TerminalIdentity
    from telemetry.jt808 import messages as m
    from tests.telemetry.jt808.gateway_helpers import PHONE, register_truck

    broker, env, _passwords, workdir = secured
    register_truck(db)
    ca = f'[mqtt]\ntls_ca_file = "{workdir / "ca.crt"}"\n'
    tls = f"mqtts://{{}}@127.0.0.1:{broker.tls_port}"
    collect_env = collector_env(settings, tls.format("collector:collector-secret-for-tests"), ca)
    gateway_env = collector_env(
        settings,
        tls.format("gateway:gateway-secret-for-tests"),
        ca + '[jt808]\nclient_id = "sec-gateway"\n',
    )
    port = free_port()
    with (
        muck_collect("sec-tls-collector-2", collect_env),
        MuckProcess(
            ["gateway", "jt808", "--listen", f"127.0.0.1:{port}"],
            gateway_env,
            ready="gateway connected to the broker",
        ),
    ):
        terminal = TerminalClient(
            TerminalIdentity(PHONE, "T000042", "粤B12345", edition=2019), "127.0.0.1", port
        ).connect()
        assert terminal.register() == m.REGISTERED
        assert terminal.authenticate() == m.OK
        ts = now_ms() // 1000 * 1000 - 60_000
        report = {"ts": ts, "lat": 22.55, "lon": 114.05, "speed": 30.0, "heading": 90}
        assert terminal.report(report) == m.OK
        terminal.close()
        assert wait_until(
            lambda: count(db, "SELECT count(*) FROM positions WHERE device_id = %s", (PHONE,)) == 1
        )


def test_a_revoked_terminal_is_disconnected_at_the_reload(secured, db):
    """Revocation is immediate for a terminal that is connected: on the SIGHUP that loads
    the new password file, Mosquitto disconnects the clients whose credentials no longer
    hold, and the terminal's reconnect is refused; other terminals carry on."""
    broker, env, passwords, workdir = secured
    port = broker.port
    collect_env = {
        **env,
        "MUCK_MQTT_URL": f"mqtt://collector:collector-secret-for-tests@127.0.0.1:{port}",
    }

    def stored(device: str) -> int:
        return count(db, "SELECT count(*) FROM positions WHERE device_id = %s", (device,))

    with muck_collect("sec-revoke-collector", collect_env):
        t0 = now_ms()
        dev_b = Client(port, "DEV-B", passwords["DEV-B"])
        dev_a = Client(port, "DEV-A", passwords["DEV-A"])
        dev_b.publish(TOPICS.telemetry("DEV-B"), fix(t0))
        assert wait_until(lambda: stored("DEV-B") == 1)
        assert dev_b.client.is_connected()

        _muck(env, "device", "revoke", "DEV-B")
        _muck(env, "broker", "sync", "--reload-pid-file", str(workdir / "mosquitto.pid"))
        assert wait_until(lambda: not dev_b.client.is_connected(), timeout=10)
        assert _refused(port, "DEV-B", passwords["DEV-B"])
        assert dev_a.client.is_connected()
        dev_a.publish(TOPICS.telemetry("DEV-A"), fix(t0 + 2))
        assert wait_until(lambda: stored("DEV-A") == 1)
        assert stored("DEV-B") == 1
        dev_a.close()
        dev_b.client.loop_stop()
