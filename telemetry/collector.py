"""`muck collect`: MQTT → PostgreSQL, at least once.

* QoS 1 on a persistent session (fixed client id, clean session off / clean start off with a
  session expiry), so what is published while the collector is down is delivered later.
* Manual acknowledgement: a message is acknowledged only after the transaction that stores
  it has committed, in arrival order. A crash before commit means redelivery, and the
  (device, fix time) key makes redelivery harmless.
* Threads: the MQTT reader thread only splits what each socket read brought among the
  writer *lanes* (`ingest.writer_lanes`) by device, always the same lane for the same
  device; each lane batches, decodes, stores and runs the rules on its own database
  connection. So receiving overlaps writing, one lane's database round trips overlap
  another's work, and the rules of one truck only ever run in one lane (no lane waits on
  another's truck locks, as collectors sharing a subscription do). Acknowledgements still go
  out in arrival order: a socket read's messages are acknowledged together once every lane
  holding some of them has committed, and only after every earlier read's. The reader is
  telemetry.mqtt.lean (MQTT 3.1.1, the default: a quarter of paho's CPU per message) or
  telemetry.mqtt.paho (MQTT 5, or `mqtt.client = "paho"`).
* The broker's in-flight window (Mosquitto `max_inflight_messages`) bounds how many messages
  are unacknowledged at once (it should be at least (lanes + 1) x batch_size); a batch is flushed when full, when its first message has waited
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
from collections import deque
from collections.abc import Callable, Sequence

import psycopg2

from core.config import ConfigError, Settings
from core.db import connect_settings
from telemetry.ingest import Ingestor
from telemetry.mqtt.lean import LeanSubscriber
from telemetry.mqtt.paho import PahoSubscriber
from telemetry.stats import IngestStats
from telemetry.store import AfterStore, BatchWriter
from telemetry.transport import OnBatch, Received, Subscriber

log = logging.getLogger(__name__)

_IDLE_FLUSH_S = 0.005
_TRANSIENT_DB_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class _Chunk:
    """The messages of one socket read: acknowledged together, in arrival order."""

    __slots__ = ("generation", "mids", "outstanding")

    def __init__(self, generation: int, mids: list[int]) -> None:
        self.generation = generation
        self.mids = mids  # packet ids of its QoS 1 messages
        self.outstanding = 0  # lanes that have not committed their share yet


class _Lane:
    """One writer: its queue, thread, ingestor and database connection."""

    def __init__(self, index: int, ingestor: Ingestor) -> None:
        self.index = index
        self.ingestor = ingestor
        self.queue: queue.SimpleQueue[tuple[_Chunk, list[Received]]] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.writer: BatchWriter | None = None
        self.conn = None


class Collector:
    def __init__(
        self,
        settings: Settings,
        *,
        client_id: str | None = None,
        after_store: Sequence[AfterStore] = (),
        stats: IngestStats | None = None,
        subscriber: Callable[[OnBatch], Subscriber] | None = None,
    ) -> None:
        self.settings = settings
        ingest = settings.ingest
        self.endpoint = None if subscriber else settings.mqtt_endpoint()
        self.client_id = client_id or settings.mqtt["client_id"]
        self.batch_size = int(ingest["batch_size"])
        self.max_wait_s = int(ingest["batch_max_wait_ms"]) / 1000
        self.retry_initial_s = float(ingest["retry_initial_s"])
        self.retry_max_s = float(ingest["retry_max_s"])
        self.after_store = list(after_store)
        self.ingestor = Ingestor(settings, stats)
        self.stats = self.ingestor.stats
        lanes = int(ingest["writer_lanes"])
        if lanes < 1:
            raise ConfigError(f"ingest.writer_lanes must be at least 1, got {lanes}")
        # Each lane has its own ingestor: terminal bindings and the implied-speed filter keep
        # per-device state, and a device always goes to the same lane.
        self.lanes = [_Lane(0, self.ingestor)] + [
            _Lane(i, Ingestor(settings, self.stats)) for i in range(1, lanes)
        ]
        self._unacked: deque[_Chunk] = deque()  # socket reads in arrival order
        self._ack_lock = threading.Lock()
        self._stop = threading.Event()
        self._stop_deadline = float("inf")
        self._draining = False
        # `subscriber`: messages from elsewhere than the broker (the JT/T 808 gateway in this
        # process, telemetry.jt808.direct), on the same contract.
        self.transport = subscriber(self._on_batch) if subscriber else self._make_transport()
        self.database_ok = True  # False from a failed write until the next commit
        self.last_commit: float | None = None  # time.time() of the last commit
        self.stats.unacked.set_function(self._unacked_messages)

    def _unacked_messages(self) -> int:
        with self._ack_lock:
            return sum(len(chunk.mids) for chunk in self._unacked)

    def health(self) -> tuple[bool, dict]:
        """For `/healthz`: healthy while connected to the broker and able to commit."""
        connected = self.transport.connected.is_set()
        since = None if self.last_commit is None else round(time.time() - self.last_commit, 1)
        detail = {
            "mqtt": "connected" if connected else "disconnected",
            "database": "ok" if self.database_ok else "failing",
            "unacknowledged": self._unacked_messages(),
            "last_commit_s_ago": since,
        }
        return connected and self.database_ok, detail

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
            ssl_context=self.settings.mqtt_tls_context(),
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
                receive_maximum=(len(self.lanes) + 1) * self.batch_size,
            )
        return LeanSubscriber(*args, **common)

    def _on_batch(self, generation: int, received: list[Received]) -> None:
        """Reader thread: hand each lane its devices' share of one socket read."""
        if self._draining:
            # Stopping: what arrives now is neither stored nor acknowledged, so the broker
            # redelivers it to the next collector on this session. Without this, a collector
            # under steady traffic would keep draining and never stop.
            return
        lanes = self.lanes
        if len(lanes) == 1:
            parts = [received]
        else:
            parts = [[] for _ in lanes]
            n = len(lanes)
            for message in received:
                # The topic names the device (or camera): same topic, same lane.
                parts[hash(message.topic) % n].append(message)
        chunk = _Chunk(generation, [m.packet_id for m in received if m.qos])
        chunk.outstanding = sum(1 for part in parts if part)
        if not chunk.outstanding:
            return
        with self._ack_lock:
            self._unacked.append(chunk)
        for lane, part in zip(lanes, parts, strict=True):
            if part:
                lane.queue.put((chunk, part))

    def _committed(self, chunks: list[_Chunk]) -> None:
        """A lane committed its share of these reads: acknowledge every read, oldest first,
        whose shares are all committed (under the lock, so that acks stay in order)."""
        with self._ack_lock:
            for chunk in chunks:
                chunk.outstanding -= 1
            unacked = self._unacked
            generation, mids = None, []
            while unacked and unacked[0].outstanding == 0:
                chunk = unacked.popleft()
                if chunk.generation != generation and mids:
                    self.transport.ack(generation, mids)
                    mids = []
                generation = chunk.generation
                mids.extend(chunk.mids)
            if mids:
                self.transport.ack(generation, mids)

    # -- database -----------------------------------------------------------------------
    def _ensure_writer(self, lane: _Lane) -> BatchWriter:
        if lane.writer is None:
            lane.conn = connect_settings(
                self.settings, application_name=f"muck-collect-{lane.index}"
            )
            lane.writer = lane.ingestor.make_writer(lane.conn, self.after_store)
        return lane.writer

    def _drop_writer(self, lane: _Lane) -> None:
        if lane.conn is not None:
            try:
                lane.conn.close()
            except Exception:  # noqa: BLE001 - already broken
                pass
        lane.conn = None
        lane.writer = None

    def _store(self, lane: _Lane, received: list[Received]) -> bool:
        """Store one batch, retrying until it commits or the stop grace period ends."""
        delay = self.retry_initial_s
        batch = None
        run_hooks = True
        while True:
            started = time.perf_counter()
            try:
                writer = self._ensure_writer(lane)
                if batch is None:
                    with writer.conn.cursor() as cur:
                        batch = lane.ingestor.build(received, cur)
                result = writer.write(batch, run_hooks=run_hooks)
            except _TRANSIENT_DB_ERRORS as exc:
                self.stats.db_errors.inc()
                self.database_ok = False
                self._drop_writer(lane)
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
            lane.ingestor.count(batch, result, len(received), time.perf_counter() - started)
            self.database_ok = True
            self.last_commit = time.time()
            return True

    def _quarantine_all(self, lane: _Lane, received: list[Received], exc: BaseException) -> bool:
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
            result = self._ensure_writer(lane).write(batch)
        except Exception:  # noqa: BLE001 - the database itself fails: retry as an outage
            self._drop_writer(lane)
            return False
        lane.ingestor.count(batch, result, len(received), 0.0)
        return True

    # -- writer lanes -------------------------------------------------------------------
    def _writer_loop(self, lane: _Lane) -> None:
        get = lane.queue.get
        while True:
            try:
                chunk, part = get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            chunks: list[_Chunk] = [chunk]
            pending = list(part)
            first_at = time.monotonic()
            # Collect until full, the first message is too old, or the stream pauses.
            while len(pending) < self.batch_size:
                remaining = self.max_wait_s - (time.monotonic() - first_at)
                if remaining <= 0:
                    break
                try:
                    chunk, more = get(timeout=min(_IDLE_FLUSH_S, remaining))
                except queue.Empty:
                    break
                chunks.append(chunk)
                pending.extend(more)
            while True:
                try:
                    stored = self._store(lane, pending)
                except Exception as exc:  # noqa: BLE001 - a bug must not stop ingestion
                    log.exception(
                        "a batch of %d messages cannot be stored; quarantining it", len(pending)
                    )
                    stored = self._quarantine_all(lane, pending, exc)
                    if not stored and not self._stop.is_set():
                        self._stop.wait(self.retry_initial_s)
                        continue
                break
            if not stored:
                return  # stopping with the database down: nothing acknowledged, all redelivered
            self._committed(chunks)

    # -- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        self._stop.clear()
        self._stop_deadline = float("inf")
        self._draining = False
        self.transport.start()
        for lane in self.lanes:
            lane.thread = threading.Thread(
                target=self._writer_loop, args=(lane,), name=f"muck-writer-{lane.index}"
            )
            lane.thread.start()

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self.transport.connected.wait(timeout)

    def stop(self, grace_s: float = 10.0) -> None:
        """Write and acknowledge what has arrived, then disconnect (the session stays);
        what arrives from now on is left to the broker to redeliver."""
        self._draining = True
        self._stop_deadline = time.monotonic() + grace_s
        deadline = time.monotonic() + grace_s
        while any(not lane.queue.empty() for lane in self.lanes) and time.monotonic() < deadline:
            time.sleep(0.01)
        self._stop.set()
        for lane in self.lanes:
            if lane.thread is not None:
                lane.thread.join(grace_s + 5)
        self.transport.stop()
        for lane in self.lanes:
            self._drop_writer(lane)

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
