"""`muck collect`: MQTT → PostgreSQL, at least once.

* QoS 1 on a persistent session (fixed client id, clean session off / clean start off with a
  session expiry), so what is published while the collector is down is delivered later.
* Manual acknowledgement: a message is acknowledged only after the transaction that stores
  it has committed, in arrival order. A crash before commit means redelivery, and the
  (device, fix time) key makes redelivery harmless.
* Two threads: the MQTT reader thread only queues what each socket read brought; the writer
  thread batches, decodes, stores and acknowledges, so receiving the next batch overlaps
  writing this one. The reader is telemetry.mqtt_lean (MQTT 3.1.1, the default: a quarter
  of paho's CPU per message) or telemetry.mqtt_paho (MQTT 5, or `mqtt.client = "paho"`).
* The broker's in-flight window (Mosquitto `max_inflight_messages`) bounds how many messages
  are unacknowledged at once; a batch is flushed when full, when its first message has waited
  `batch_max_wait_ms`, or as soon as nothing more arrives for a few milliseconds, so a small
  window slows ingestion but never stalls it.
* Database outage: the writer keeps the batch, acknowledges nothing, retries with back-off
  and reconnects; the broker holds everything else. Broker outage: the reader reconnects
  with back-off; acknowledgements of messages received on the previous connection are dropped
  (their packet ids mean nothing to the new connection) and the broker redelivers them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

import psycopg2

from core.config import ConfigError, Settings
from core.db import connect_settings
from telemetry.ingest import Incoming, Ingestor
from telemetry.mqtt_lean import LeanSubscriber, Received
from telemetry.mqtt_paho import PahoSubscriber
from telemetry.stats import IngestStats
from telemetry.store import AfterStore, BatchWriter

log = logging.getLogger(__name__)

_IDLE_FLUSH_S = 0.005
_TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


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
        ingest = settings.ingest
        self.endpoint = settings.mqtt_endpoint()
        self.client_id = client_id or settings.mqtt["client_id"]
        self.batch_size = int(ingest["batch_size"])
        self.max_wait_s = int(ingest["batch_max_wait_ms"]) / 1000
        self.retry_initial_s = float(ingest["retry_initial_s"])
        self.retry_max_s = float(ingest["retry_max_s"])
        self.after_store = list(after_store)
        self.ingestor = Ingestor(settings, stats)
        self.stats = self.ingestor.stats
        self._queue: queue.SimpleQueue[tuple[int, list[Received]]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        self._writer_thread: threading.Thread | None = None
        self._writer: BatchWriter | None = None
        self._conn = None
        self.transport = self._make_transport()

    def _make_transport(self) -> LeanSubscriber | PahoSubscriber:
        mqtt_cfg = self.settings.mqtt
        group = mqtt_cfg["shared_group"]
        topics = self.ingestor.topics.subscriptions()
        subscriptions = [f"$share/{group}/{t}" for t in topics] if group else topics
        common = dict(
            username=self.endpoint.username,
            password=self.endpoint.password,
            keepalive=int(mqtt_cfg["keepalive_s"]),
            reconnect_min_s=1.0,
            reconnect_max_s=max(1.0, self.retry_max_s),
        )
        args = (
            self.endpoint.host,
            self.endpoint.port,
            self.client_id,
            subscriptions,
            self._on_batch,
        )
        protocol, client = str(mqtt_cfg["protocol"]), mqtt_cfg["client"]
        if protocol not in ("3.1.1", "5"):
            raise ConfigError(f'mqtt.protocol must be "3.1.1" or "5", got {protocol!r}')
        if client not in ("lean", "paho"):
            raise ConfigError(f'mqtt.client must be "lean" or "paho", got {client!r}')
        if protocol == "5" or client == "paho":
            return PahoSubscriber(
                *args,
                **common,
                mqtt5=protocol == "5",
                session_expiry_s=int(mqtt_cfg["session_expiry_s"]),
                receive_maximum=2 * self.batch_size,
            )
        return LeanSubscriber(*args, **common)

    def _on_batch(self, generation: int, received: list[Received]) -> None:
        self._queue.put((generation, received))

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

    def _store(self, received: list[Received]) -> bool:
        """Store one batch, retrying until it commits or the stop grace period ends."""
        delay = self.retry_initial_s
        incoming = [Incoming(topic, payload) for topic, payload, _, _ in received]
        batch = None
        run_hooks = True
        while True:
            started = time.perf_counter()
            try:
                writer = self._ensure_writer()
                if batch is None:
                    with writer.conn.cursor() as cur:
                        batch = self.ingestor.build(incoming, cur)
                result = writer.write(batch, run_hooks=run_hooks)
            except _TRANSIENT_DB_ERRORS as exc:
                self.stats.db_errors.inc()
                self._drop_writer()
                log.warning("database unavailable (%s); retrying in %.1fs", exc, delay)
                self._stop.wait(delay)
                if self._stop.is_set() and time.monotonic() > self._stop_deadline:
                    return False
                delay = min(delay * 2, self.retry_max_s)
                continue
            except Exception:
                if batch is None or not run_hooks or not self.after_store:
                    raise
                # A fault in an after-store hook (the rules) must not stop ingestion: store
                # the batch without hooks, loudly. The rules resume with the next batch.
                log.exception("after-store hook failed; storing the batch without it")
                self.stats.hook_errors.inc()
                run_hooks = False
                continue
            self.ingestor.count(batch, result, len(received), time.perf_counter() - started)
            return True

    def _quarantine_all(self, received: list[Received], exc: BaseException) -> bool:
        """Last resort for a batch that cannot be stored for a reason other than an outage
        (a bug): keep every message, with the error, so nothing is lost and nothing stalls."""
        from telemetry.store import Batch, Quarantined

        now = int(time.time() * 1000)
        batch = Batch(received_ms=now)
        batch.quarantined = [
            Quarantined(now, topic, None, "internal_error", repr(exc)[:1000], payload)
            for topic, payload, _, _ in received
        ]
        try:
            result = self._ensure_writer().write(batch)
        except Exception:  # noqa: BLE001 - the database itself fails: retry as an outage
            self._drop_writer()
            return False
        self.ingestor.count(batch, result, len(received), 0.0)
        return True

    # -- writer loop --------------------------------------------------------------------
    def _writer_loop(self) -> None:
        get = self._queue.get
        while True:
            try:
                generation, pending = get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            acks: list[tuple[int, list[Received]]] = [(generation, pending)]
            pending = list(pending)
            first_at = time.monotonic()
            # Collect until full, the first message is too old, or the stream pauses.
            while len(pending) < self.batch_size:
                remaining = self.max_wait_s - (time.monotonic() - first_at)
                if remaining <= 0:
                    break
                try:
                    generation, more = get(timeout=min(_IDLE_FLUSH_S, remaining))
                except queue.Empty:
                    break
                acks.append((generation, more))
                pending.extend(more)
            while True:
                try:
                    stored = self._store(pending)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop ingestion
                    log.exception(
                        "a batch of %d messages cannot be stored; quarantining it", len(pending)
                    )
                    stored = self._quarantine_all(pending, exc)
                    if not stored and not self._stop.is_set():
                        self._stop.wait(self.retry_initial_s)
                        continue
                break
            if not stored:
                return  # stopping with the database down: nothing acknowledged, all redelivered
            for generation, part in acks:
                self.transport.ack(generation, [mid for _, _, mid, qos in part if qos])

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._stop_deadline = float("inf")
        self.transport.start()
        self._writer_thread = threading.Thread(target=self._writer_loop, name="muck-writer")
        self._writer_thread.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.transport.connected.wait(timeout)

    def stop(self, grace_s: float = 10.0) -> None:
        """Write and acknowledge what has arrived, then disconnect (the session stays)."""
        self._stop_deadline = time.monotonic() + grace_s
        deadline = time.monotonic() + grace_s
        while not self._queue.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        if self._writer_thread is not None:
            self._writer_thread.join(grace_s + 5)
        self.transport.stop()
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
