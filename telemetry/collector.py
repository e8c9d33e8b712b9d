"""`muck collect`: MQTT → PostgreSQL, at least once.

* QoS 1 on a persistent session (fixed client id, clean session off / clean start off with a
  session expiry), so what is published while the collector is down is delivered later.
* Manual acknowledgement: a message is acknowledged only after the transaction that stores
  it has committed, in arrival order. A crash before commit means redelivery, and the
  (device, fix time) key makes redelivery harmless.
* Two threads: paho's network thread only queues messages; the writer thread batches,
  decodes, stores and acknowledges, so receiving the next batch overlaps writing this one.
* The broker's in-flight window (Mosquitto `max_inflight_messages`) bounds how many messages
  are unacknowledged at once; a batch is flushed when full, when its first message has waited
  `batch_max_wait_ms`, or as soon as nothing more arrives for a few milliseconds, so a small
  window slows ingestion but never stalls it.
* Database outage: the writer keeps the batch, acknowledges nothing, retries with back-off
  and reconnects; the broker holds everything else. Broker outage: paho reconnects with
  back-off; acknowledgements of messages received on the previous connection are dropped
  (their packet ids mean nothing to the new connection) and the broker redelivers them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
import psycopg2
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from core.config import Settings
from core.db import connect_settings
from telemetry.ingest import Incoming, Ingestor
from telemetry.stats import IngestStats
from telemetry.store import AfterStore, BatchWriter

log = logging.getLogger(__name__)

_IDLE_FLUSH_S = 0.005
_TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


@dataclass(slots=True)
class _Received:
    generation: int
    topic: str
    payload: bytes
    mid: int
    qos: int


class Collector:
    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str | None = None,
        after_store: Sequence[AfterStore] = (),
        stats: IngestStats | None = None,
    ) -> None:
        self.settings = settings
        mqtt_cfg, ingest = settings.mqtt, settings.ingest
        self.endpoint = settings.mqtt_endpoint()
        self.client_id = client_id or mqtt_cfg["client_id"]
        self.batch_size = int(ingest["batch_size"])
        self.max_wait_s = int(ingest["batch_max_wait_ms"]) / 1000
        self.retry_initial_s = float(ingest["retry_initial_s"])
        self.retry_max_s = float(ingest["retry_max_s"])
        self.after_store = list(after_store)
        self.ingestor = Ingestor(settings, stats)
        self.stats = self.ingestor.stats
        self._queue: queue.SimpleQueue[_Received] = queue.SimpleQueue()
        self._generation = 0
        self._connected = threading.Event()
        self._stop = threading.Event()
        self._writer_thread: threading.Thread | None = None
        self._writer: BatchWriter | None = None
        self._conn = None
        self.client = self._make_client()

    # -- MQTT ---------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        v5 = str(self.settings.mqtt["protocol"]) == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=None if v5 else False,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            manual_ack=True,
        )
        client.max_inflight_messages_set(20)  # outgoing only; we do not publish
        client.max_queued_messages_set(0)
        if self.endpoint.username:
            client.username_pw_set(self.endpoint.username, self.endpoint.password)
        client.reconnect_delay_set(1, max(1, int(self.retry_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._v5 = v5
        return client

    def _subscriptions(self) -> list[str]:
        topics = self.ingestor.topics.subscriptions()
        group = self.settings.mqtt["shared_group"]
        return [f"$share/{group}/{t}" for t in topics] if group else topics

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            log.error("MQTT connection refused: %s", reason_code)
            return
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.endpoint.host,
            self.endpoint.port,
            self.client_id,
            flags.session_present,
        )
        client.subscribe([(topic, 1) for topic in self._subscriptions()])
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._generation += 1
        self._connected.clear()
        if not self._stop.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            _Received(self._generation, message.topic, message.payload, message.mid, message.qos)
        )

    def _connect(self) -> None:
        host, port = self.endpoint.host, self.endpoint.port
        keepalive = int(self.settings.mqtt["keepalive_s"])
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = int(self.settings.mqtt["session_expiry_s"])
            props.ReceiveMaximum = min(65535, 2 * self.batch_size)
            self.client.connect_async(host, port, keepalive, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, keepalive)
        self.client.loop_start()

    # -- database -----------------------------------------------------------------------
    def _ensure_writer(self) -> BatchWriter:
        if self._writer is None:
            self._conn = connect_settings(self.settings, application_name="muck-collect")
            self._writer = self.ingestor.make_writer(self._conn, self.after_store)
        return self._writer

    def _drop_writer(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        self._conn = None
        self._writer = None

    def _store(self, messages: list[_Received]) -> bool:
        """Store one batch, retrying until it commits or the collector stops."""
        delay = self.retry_initial_s
        incoming = [Incoming(m.topic, m.payload) for m in messages]
        batch = None
        while True:
            started = time.perf_counter()
            try:
                writer = self._ensure_writer()
                if batch is None:
                    with writer.conn.cursor() as cur:
                        batch = self.ingestor.build(incoming, cur)
                result = writer.write(batch)
            except _TRANSIENT_DB_ERRORS as exc:
                self.stats.db_errors.inc()
                self._drop_writer()
                if self._stop.is_set() and not self._connected.is_set():
                    return False
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                if self._stop.wait(delay) and self._stop_deadline_passed():
                    return False
                delay = min(delay * 2, self.retry_max_s)
                continue
            self.ingestor.count(batch, result, len(messages), time.perf_counter() - started)
            return True

    def _stop_deadline_passed(self) -> bool:
        return time.monotonic() > self._stop_deadline

    def _ack(self, messages: list[_Received]) -> None:
        generation = self._generation
        for m in messages:
            if m.qos > 0 and m.generation == generation:
                self.client.ack(m.mid, m.qos)

    # -- writer loop --------------------------------------------------------------------
    def _writer_loop(self) -> None:
        pending: list[_Received] = []
        get = self._queue.get
        while True:
            stopping = self._stop.is_set()
            if not pending:
                if stopping:
                    break
                try:
                    pending.append(get(timeout=0.2))
                except queue.Empty:
                    continue
                first_at = time.monotonic()
            # Collect until full, the first message is too old, or the stream pauses.
            while len(pending) < self.batch_size:
                remaining = self.max_wait_s - (time.monotonic() - first_at)
                if remaining <= 0:
                    break
                try:
                    pending.append(get(timeout=min(_IDLE_FLUSH_S, remaining)))
                except queue.Empty:
                    break
            if self._store(pending):
                self._ack(pending)
                pending = []
            elif self._stop.is_set():
                break

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._stop_deadline = float("inf")
        self._connect()
        self._writer_thread = threading.Thread(target=self._writer_loop, name="muck-writer")
        self._writer_thread.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    def stop(self, grace_s: float = 10.0) -> None:
        """Write and acknowledge what has arrived, then disconnect."""
        self._stop_deadline = time.monotonic() + grace_s
        # Let what is already queued be written first.
        deadline = time.monotonic() + grace_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._writer_thread is not None:
            self._writer_thread.join(grace_s + 5)
        self.client.disconnect()
        self.client.loop_stop()
        self._drop_writer()

    def run(
        self,
        stop_requested: Callable[[], bool],
        on_tick: Callable[[], None] | None = None,
        tick_s: float = 5.0,
    ) -> None:
        self.start()
        try:
            last = time.monotonic()
            while not stop_requested():
                time.sleep(0.2)
                if on_tick and time.monotonic() - last >= tick_s:
                    on_tick()
                    last = time.monotonic()
        finally:
            self.stop()
