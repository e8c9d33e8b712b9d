"""Load generation shared by `muck bench ingest` and `muck loadtest`.

* Publisher processes on `simulators.fastpub` (one Python process cannot publish 20,000 QoS 1
  messages/s with room to spare, and a publisher in the measuring process would share its
  GIL). Every fix carries its device's sequence number `seq` (1, 2, …, so losses can be
  counted per device) and its publish time as `ts` (so publish → stored latency is
  `received_at - fix_time`). A fraction can be published twice (exact copies: duplicates
  the platform must store once) or to a topic no collector subscribes to (a loss on purpose,
  to show the loss check works).
* The broker's raw ceiling: the same publishers to a subscriber that only acknowledges.
* Scratch registration of the load's devices as trucks of a scratch company (through
  `registry.service`), so the compliance rules run on every fix, and its removal with
  everything the rules wrote.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import multiprocessing as mp
import os
import pickle
import random
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import psutil

from core.config import MqttEndpoint
from registry.service import register_fleet, remove_company
from simulators.fastpub import FastPublisher, paced
from telemetry.mqtt.lean import LeanSubscriber

log = logging.getLogger(__name__)

# Where `lose_pct` sends messages: a prefix outside the contract, which no collector reads.
VOID_PREFIX = "muck-loadtest-void/v1"

_SPEED_MS = 10.0  # 36 km/h: every truck drives back and forth on a 3 km street
_LEG_M = 3000.0
_M_PER_DEG_LAT = 111_320.0
_COPY_DELAY = 500  # messages between an original and its duplicate


@dataclass
class PublisherPlan:
    """What one publisher process publishes. Either `count` or `duration_s` ends it (or the
    stop event); `rate` is this process's share of the target (0: as fast as it can)."""

    url: str
    topic_prefix: str
    devices: list[str]
    rate: float = 0.0
    count: int | None = None
    duration_s: float | None = None
    start_at: float = 0.0  # time.time() at which every process starts, so they start together
    duplicate_pct: float = 0.0
    lose_pct: float = 0.0
    seed: int = 0
    window: int = 10_000
    first_index: int = 0  # index of devices[0] in the whole fleet (spreads the positions)
    # Device index step between this process's devices (devices are dealt round-robin).
    index_step: int = 1
    # Trucks start empty and load one after another over this many seconds from start_at
    # (device i of n at i/n of it); 0: all loaded from the start. Registered without
    # permits, they then raise their violations one after another, as a city does, rather
    # than all in the same second.
    load_stagger_s: float = 0.0
    fleet_size: int = 0  # devices of all processes (the stagger's n)


@dataclass
class PublisherResult:
    """What one publisher process did. Messages a process sent are all acknowledged by the
    broker (QoS 1 PUBACK) unless `error` says otherwise."""

    sent: int = 0  # packets written, duplicates included
    unique: int = 0  # distinct (device, seq) published, those sent to the void included
    duplicates: int = 0
    voided: int = 0
    seconds: float = 0.0  # from the start until the broker acknowledged the last message
    write_seconds: float = 0.0  # from the start until the last message was written
    cpu_s: float = 0.0
    last_seq: dict[str, int] = field(default_factory=dict)  # seq 1..last of each device
    duplicated: list[tuple[str, int]] = field(default_factory=list)
    per_second: list[int] = field(default_factory=list)  # packets per second from start_at
    error: str | None = None


def _process_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def split(total: int, parts: int) -> list[int]:
    """`total` in `parts` shares that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def plans_for(
    url: str,
    topic_prefix: str,
    devices: Sequence[str],
    publishers: int,
    *,
    rate: float = 0.0,
    count: int | None = None,
    duration_s: float | None = None,
    start_at: float,
    duplicate_pct: float = 0.0,
    lose_pct: float = 0.0,
    seed: int = 0,
    load_stagger_s: float = 0.0,
) -> list[PublisherPlan]:
    """One plan per process: devices dealt round-robin, count and rate split evenly."""
    shares = split(count, publishers) if count is not None else [None] * publishers
    return [
        PublisherPlan(
            url=url,
            topic_prefix=topic_prefix,
            devices=list(devices[i::publishers]),
            rate=rate / publishers if rate else 0.0,
            count=shares[i],
            duration_s=duration_s,
            start_at=start_at,
            duplicate_pct=duplicate_pct,
            lose_pct=lose_pct,
            seed=seed * 1000 + i,
            first_index=i,
            index_step=publishers,
            load_stagger_s=load_stagger_s,
            fleet_size=len(devices),
        )
        for i in range(publishers)
    ]


class _Run:
    """State of one publisher process, kept outside the loop so that a failure still
    reports what was sent before it."""

    def __init__(self, plan: PublisherPlan, progress, stop) -> None:
        self.plan = plan
        self.progress = progress
        self.stop = stop
        self.result = PublisherResult()
        self.done = False
        self.seqs = [0] * len(plan.devices)
        self.counted = 0
        self.cpu_at_start = _process_cpu()
        self.began = time.perf_counter()

    def messages(self) -> Iterator[tuple[bytes, bytes]]:
        plan, result = self.plan, self.result
        devices = plan.devices
        n = len(devices)
        topics = [f"{plan.topic_prefix}/trucks/{d}/telemetry".encode() for d in devices]
        void = [f"{VOID_PREFIX}/trucks/{d}/telemetry".encode() for d in devices]
        # Each truck drives east and back on its own street at 36 km/h: plausible for the
        # implied-speed filter, and moving, so the rules see trips when devices are trucks.
        origins = []
        loaded_from = []  # epoch ms from which each device reports a full body
        for k in range(n):
            g = plan.first_index + k * plan.index_step
            share = g / plan.fleet_size if plan.fleet_size else 0.0
            loaded_from.append(
                int((plan.start_at + share * plan.load_stagger_s) * 1000)
                if plan.load_stagger_s
                else 0
            )
            lat0 = 22.45 + (g % 60) * 0.003
            lon0 = 113.90 + (g // 60 % 60) * 0.004
            origins.append((lat0, lon0, _M_PER_DEG_LAT * math.cos(math.radians(lat0))))
        last_ts = [0] * n
        seqs = self.seqs
        encode = msgspec.json.encode
        rnd = random.Random(plan.seed).random
        dup_p, lose_p = plan.duplicate_pct / 100.0, plan.lose_pct / 100.0
        count = plan.count
        now = time.time
        # A copy goes out some messages after its original, as a terminal's re-send would:
        # usually in another batch, and with several collectors often to another collector.
        copies: deque[tuple[int, bytes, bytes]] = deque()
        i = 0
        while not self.done and (count is None or result.unique < count):
            while copies and copies[0][0] <= i:
                _, topic, payload = copies.popleft()
                yield topic, payload
            d = i % n
            i += 1
            seqs[d] += 1
            # Fix times of one device must differ (the store's key is device + fix time).
            ts = max(int(now() * 1000), last_ts[d] + 1)
            last_ts[d] = ts
            lat0, lon0, m_per_deg_lon = origins[d]
            s = (ts / 1000.0 * _SPEED_MS) % (2 * _LEG_M)
            east = s < _LEG_M
            payload = encode(
                {
                    "ts": ts,
                    "lat": lat0,
                    "lon": lon0 + (s if east else 2 * _LEG_M - s) / m_per_deg_lon,
                    "speed": 36.0,
                    "heading": 90 if east else 270,
                    "lid": "closed",
                    "load": "full" if ts >= loaded_from[d] else "empty",
                    "seq": seqs[d],
                }
            )
            result.unique += 1
            if lose_p and rnd() < lose_p:
                result.voided += 1
                yield void[d], payload
                continue
            yield topics[d], payload
            if dup_p and rnd() < dup_p:
                result.duplicates += 1
                result.duplicated.append((devices[d], seqs[d]))
                copies.append((i + _COPY_DELAY, topics[d], payload))
        for _, topic, payload in copies:
            yield topic, payload
        result.write_seconds = time.perf_counter() - self.began

    def pace(self, rate: float):
        """Called by FastPublisher after each chunk: keep the rate, count packets per second,
        publish progress and decide when to stop."""
        keep_rate = paced(rate) if rate > 0 else None
        plan, result = self.plan, self.result
        end = plan.start_at + plan.duration_s if plan.duration_s else math.inf

        def pace(sent: int) -> None:
            t = time.time()
            second = max(0, int(t - plan.start_at))
            per_second = result.per_second
            while len(per_second) <= second:
                per_second.append(0)
            per_second[second] += sent - self.counted
            self.counted = sent
            if self.progress is not None:
                self.progress[0] = sent
                self.progress[1] = result.unique - result.voided
            if t >= end or (self.stop is not None and self.stop.is_set()):
                self.done = True
            elif keep_rate is not None:
                keep_rate(sent)

        return pace

    def run(self) -> PublisherResult:
        plan, result = self.plan, self.result
        endpoint = MqttEndpoint.parse(plan.url)
        publisher = FastPublisher(
            endpoint.host,
            endpoint.port,
            username=endpoint.username,
            password=endpoint.password,
            window=plan.window,
        )
        try:
            while time.time() < plan.start_at:
                time.sleep(0.001)
            self.cpu_at_start = _process_cpu()
            self.began = began = time.perf_counter()
            # Small chunks keep the pacing and the stop check fine-grained at low rates.
            chunk = 256 if plan.rate == 0 or plan.rate >= 2000 else 32
            publisher.publish_many(self.messages(), pace=self.pace(plan.rate), chunk=chunk)
            result.seconds = time.perf_counter() - began
        finally:
            result.sent = publisher.sent
            publisher.close()
        return result

    def finish(self) -> PublisherResult:
        result = self.result
        result.last_seq = {d: s for d, s in zip(self.plan.devices, self.seqs, strict=True) if s}
        # CPU of publishing only (not of starting the process and connecting).
        result.cpu_s = _process_cpu() - self.cpu_at_start
        if self.progress is not None:
            self.progress[0] = result.sent
            self.progress[1] = result.unique - result.voided
        return result


def publisher_main(plan: PublisherPlan, result_path: str, progress=None, stop=None) -> None:
    """Entry of a publisher process: publish the plan, write a PublisherResult (pickled) to
    `result_path`. A file, not a queue: a large result in a pipe blocks the child's exit
    until the parent reads it, and a child killed mid-write leaves the reader hanging."""
    # The parent decides when to stop (Ctrl-C in a terminal reaches the whole process group).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    run = _Run(plan, progress, stop)
    try:
        run.run()
    except Exception as exc:  # noqa: BLE001 - reported to the parent with what was sent
        run.result.error = f"{type(exc).__name__}: {exc}"
    partial = result_path + ".part"
    with open(partial, "wb") as fh:
        pickle.dump(run.finish(), fh)
    os.replace(partial, result_path)


class PublisherGroup:
    """Publisher processes started together; `sent()` is live, `join()` collects results."""

    def __init__(self, plans: Sequence[PublisherPlan]) -> None:
        ctx = mp.get_context("spawn")
        self.plans = list(plans)
        self.folder = Path(tempfile.mkdtemp(prefix="muck-publishers-"))
        self.paths = [str(self.folder / f"result-{i}.pickle") for i in range(len(self.plans))]
        self.stop_event = ctx.Event()
        # Per process: [packets sent, distinct messages sent to the platform's topics].
        self.progress = [ctx.Array("q", 2, lock=False) for _ in self.plans]
        self.procs = [
            ctx.Process(
                target=publisher_main,
                args=(plan, self.paths[i], self.progress[i], self.stop_event),
                name=f"publisher-{i}",
            )
            for i, plan in enumerate(self.plans)
        ]

    def start(self) -> PublisherGroup:
        for proc in self.procs:
            proc.start()
        return self

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def sent(self) -> int:
        return sum(v[0] for v in self.progress)

    def storable(self) -> int:
        """Distinct messages published to the platform's topics so far: what should be stored."""
        return sum(v[1] for v in self.progress)

    def running(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float = 60.0) -> list[PublisherResult]:
        """Wait for every process and read its result; a process that is still running
        after `timeout` is killed, and one without a result gets an error result."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        results = []
        for proc, path in zip(self.procs, self.paths, strict=True):
            try:
                with open(path, "rb") as fh:
                    results.append(pickle.load(fh))
            except (OSError, pickle.UnpicklingError, EOFError):
                results.append(
                    PublisherResult(
                        error=f"publisher process {proc.pid} ended without a result "
                        f"(exit code {proc.exitcode})"
                    )
                )
        shutil.rmtree(self.folder, ignore_errors=True)
        return results


def _ceiling_subscriber(url: str, topic: str, expected: int, ready, result) -> None:
    """Receives and acknowledges, nothing else: what the broker alone can deliver."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    endpoint = MqttEndpoint.parse(url)
    got = 0
    first = last = 0.0
    done = threading.Event()
    subscriber: LeanSubscriber

    def on_batch(generation: int, received: list) -> None:
        nonlocal got, first, last
        if got == 0:
            first = time.perf_counter()
        got += len(received)
        last = time.perf_counter()
        subscriber.ack(generation, [mid for _, _, mid, qos in received if qos])
        if got >= expected:
            done.set()

    subscriber = LeanSubscriber(
        endpoint.host,
        endpoint.port,
        "bench-ceil-" + uuid.uuid4().hex[:6],
        [topic],
        on_batch,
        username=endpoint.username,
        password=endpoint.password,
    )
    subscriber.start()
    subscriber.connected.wait(10)
    time.sleep(0.5)
    ready.set()
    done.wait(120)
    subscriber.stop()
    result.put((got, last - first if got > 1 else 0.0))


def broker_ceiling(url: str, messages: int, publishers: int, qos: int = 1) -> float:
    """Messages/s the broker delivers from `publishers` unpaced publisher processes to one
    subscriber that only acknowledges (QoS 1 both ways), on a topic of its own."""
    if qos != 1:
        raise ValueError("the load publishes at QoS 1 (what terminals use)")
    ctx = mp.get_context("spawn")
    prefix = "bench-ceiling-" + uuid.uuid4().hex[:6]
    ready, result = ctx.Event(), ctx.Queue()
    sub = ctx.Process(
        target=_ceiling_subscriber, args=(url, f"{prefix}/#", messages, ready, result)
    )
    sub.start()
    ready.wait(10)
    group = PublisherGroup(
        plans_for(
            url,
            prefix,
            [f"C{i:05d}" for i in range(1000)],
            publishers,
            count=messages,
            start_at=time.time() + 2.0,
        )
    ).start()
    group.join(timeout=150)
    got, seconds = result.get(timeout=150)
    sub.join(10)
    return got / seconds if seconds else 0.0


def register_devices(conn, company: str, plate_prefix: str, device_ids: Sequence[str]) -> int:
    """Register each device as a truck (plate `plate_prefix` + 6 digits) of a new company
    named `company`, bound from a day ago, so the compliance rules run on their fixes."""
    plates = [f"{plate_prefix}{n:06d}" for n in range(len(device_ids))]
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with conn.cursor() as cur:
        company_id = register_fleet(cur, company, plates, device_ids, since)
    conn.commit()
    return company_id


def unregister_company(conn, company: str) -> int:
    """Remove the company registered by `register_devices`, its trucks and terminals, and
    everything the platform wrote about them (violations with their events, alerts and
    evidence, trips, rule state). Evidence that became final during the run is never deleted
    (evidence/sql/0001 refuses it): its violations, their trucks and the company stay, and
    their number is returned (0 when everything went)."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM companies WHERE name = %s", (company,))
        row = cur.fetchone()
        if row is None:
            conn.commit()
            return 0
        company_id = row[0]
        trucks = "SELECT id FROM trucks WHERE company_id = %s"
        cur.execute(
            f"""CREATE TEMP TABLE scratch_violations ON COMMIT DROP AS
                SELECT id FROM violations v WHERE truck_id IN ({trucks})
                  AND NOT EXISTS (SELECT 1 FROM evidence_records r
                                  WHERE r.violation_id = v.id AND r.final)""",  # noqa: S608 - constant
            (company_id,),
        )
        # What refers to the violations first (the foreign keys refuse otherwise).
        for table in (
            "alert_outbox",
            "violation_events",
            "evidence_audit",
            "evidence_pending",
            "evidence_records",
        ):
            cur.execute(
                f"DELETE FROM {table} WHERE violation_id IN (SELECT id FROM scratch_violations)"  # noqa: S608 - fixed table name
            )
        cur.execute("DELETE FROM violations WHERE id IN (SELECT id FROM scratch_violations)")
        for table in ("trips", "rule_snapshots", "truck_state"):
            cur.execute(
                f"DELETE FROM {table} WHERE truck_id IN ({trucks})",  # noqa: S608 - fixed table name
                (company_id,),
            )
        cur.execute(f"SELECT count(*) FROM violations WHERE truck_id IN ({trucks})", (company_id,))  # noqa: S608 - constant
        kept = cur.fetchone()[0]
        if not kept:
            remove_company(cur, company_id)
    conn.commit()
    if kept:
        log.warning(
            "%s: %d violations kept (their evidence became final); drop the scratch database",
            company,
            kept,
        )
    return kept
