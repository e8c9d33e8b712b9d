"""Real services for the test suite: a PostgreSQL database and an MQTT broker.

PostgreSQL: $MUCK_TEST_DATABASE_URL (a server URL; each test session creates and drops its
own database on it), else the machine's server on 127.0.0.1:5432, else an embedded pgserver.
MQTT: a Mosquitto started from config/mosquitto.conf on a free port when the `mosquitto`
binary exists, else $MUCK_TEST_MQTT_URL, else the embedded amqtt broker (tests that need
Mosquitto's persistence or shared subscriptions are then skipped with a reason).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import psycopg2

from core.db import create_database, drop_database

ROOT = Path(__file__).resolve().parent.parent
# The broker configuration docker-compose runs; tests/telemetry/test_broker_security.py starts it.
PRODUCTION_BROKER_CONFIG = ROOT / "config" / "mosquitto.prod.conf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {host}:{port} after {timeout}s")


def _reachable(url: str) -> bool:
    try:
        psycopg2.connect(url, connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


@dataclass
class PostgresServer:
    admin_url: str
    _embedded: object | None = None

    @classmethod
    def start(cls) -> PostgresServer:
        url = os.environ.get("MUCK_TEST_DATABASE_URL")
        if url:
            return cls(url)
        local = "postgresql://postgres@127.0.0.1:5432/postgres"
        if _reachable(local):
            return cls(local)
        import pgserver

        server = pgserver.get_server(tempfile.mkdtemp(prefix="muck-test-pg-"), cleanup_mode="stop")
        return cls(server.get_uri(), server)

    def create_database(self) -> str:
        return create_database(self.admin_url, "muck_test_")[1]

    def drop_database(self, url: str) -> None:
        drop_database(self.admin_url, urlparse(url).path.lstrip("/"))

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.cleanup()


@dataclass
class Broker:
    url: str
    kind: str  # "mosquitto" or "amqtt" or "external"
    process: subprocess.Popen | None = None
    workdir: Path | None = None
    config_path: Path | None = None
    port: int = 0

    @property
    def is_mosquitto(self) -> bool:
        return self.kind in ("mosquitto", "external")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        """Stop and start again on the same port with the same persistence folder."""
        assert self.kind == "mosquitto"
        self.stop()
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port("127.0.0.1", self.port)

    @classmethod
    def start_mosquitto(cls) -> Broker:
        port = free_port()
        workdir = Path(tempfile.mkdtemp(prefix="muck-test-mqtt-"))
        lines = []
        for line in (ROOT / "config" / "mosquitto.conf").read_text().splitlines():
            if line.startswith("listener "):
                line = f"listener {port} 127.0.0.1"
            elif line.startswith("persistence_location "):
                line = f"persistence_location {workdir}/"
            lines.append(line)
        # Run as the current user: as root, Mosquitto would switch to user "mosquitto", which
        # cannot write this temporary persistence folder.
        lines.append(f"user {getpass.getuser()}")
        config = workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        broker = cls(f"mqtt://127.0.0.1:{port}", "mosquitto", None, workdir, config, port)
        broker.process = subprocess.Popen(
            ["mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port("127.0.0.1", port)
        return broker

    @classmethod
    def start_production(cls, workdir: Path) -> Broker:
        """Mosquitto from config/mosquitto.prod.conf, as the deployment runs it, with only the
        listener ports and file paths replaced: the password file, ACL and TLS files are
        `workdir`/passwd, acl, ca.crt, server.crt, server.key (the test writes them first).
        `port` is the plain listener, `tls_port` the TLS one."""
        port, tls_port = free_port(), free_port()
        paths = {
            "password_file": workdir / "passwd",
            "acl_file": workdir / "acl",
            "cafile": workdir / "ca.crt",
            "certfile": workdir / "server.crt",
            "keyfile": workdir / "server.key",
            "persistence_location": f"{workdir}/",
        }
        listeners = iter([port, tls_port])
        lines = []
        for line in PRODUCTION_BROKER_CONFIG.read_text().splitlines():
            key = line.split(" ", 1)[0]
            if key == "listener":
                line = f"listener {next(listeners)} 127.0.0.1"
            elif key in paths:
                line = f"{key} {paths[key]}"
            lines.append(line)
        lines.append(f"user {getpass.getuser()}")
        config = workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        broker = cls(f"mqtt://127.0.0.1:{port}", "mosquitto", None, workdir, config, port)
        broker.tls_port = tls_port  # type: ignore[attr-defined]
        broker.process = subprocess.Popen(
            ["mosquitto", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(workdir / "mosquitto.log", "w"),  # noqa: SIM115 - lives with the process
        )
        wait_for_port("127.0.0.1", port)
        wait_for_port("127.0.0.1", tls_port)
        return broker

    @classmethod
    def start(cls) -> Broker:
        if shutil.which("mosquitto"):
            return cls.start_mosquitto()
        url = os.environ.get("MUCK_TEST_MQTT_URL")
        if url:
            return cls(url, "external")
        from core.embedded import EmbeddedBroker

        port = free_port()
        embedded = EmbeddedBroker(port)
        embedded.start()
        broker = cls(f"mqtt://127.0.0.1:{port}", "amqtt", port=port)
        broker._embedded = embedded  # type: ignore[attr-defined]
        return broker


MUCK = str(Path(sys.executable).with_name("muck"))


class MuckProcess:
    """A real `muck …` command (collect, web, …) as the product runs it, in a subprocess.

    Waits until a line containing `ready` appears on its standard error; `log` keeps every
    line, to show in a failed assertion. Stop it with `stop()` (SIGTERM, as an operator or
    systemd would) or use it as a context manager.
    """

    def __init__(self, args: list[str], env: dict[str, str], ready: str, timeout: float = 30):
        self.connected = threading.Event()
        self.ready = ready
        self.proc = subprocess.Popen(
            [MUCK, *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if not self.connected.wait(timeout):
            self.stop()
            raise AssertionError(f"muck {' '.join(args)} did not start:\n{self.output()}")

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)
            if self.ready in line:
                self.connected.set()

    def output(self) -> str:
        return "".join(self.log[-200:])

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> MuckProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def muck_collect(client_id: str, env: dict[str, str], *, maintenance: bool = False) -> MuckProcess:
    """The real `muck collect`, once subscribed; `env` from tests.mqtt_helpers.collector_env.
    Partition maintenance only when asked: the session database has its partitions."""
    args = ["collect", "--client-id", client_id]
    if not maintenance:
        args.append("--no-maintenance")
    return MuckProcess(args, env, ready="subscribed to")
