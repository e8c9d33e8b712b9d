"""`muck bench alerts`: publish of the fix that completes a violation → webhook receipt.

The ingestion benchmark (bench/ingest.py) with its devices registered and the rules on, the
collectors being real `muck collect` processes that run the alert dispatcher as in
production; a team webhook subscription points at a receiver on 127.0.0.1 that notes when
each alert arrived. For each violation of the run, the latency is the receipt time minus the
publish time (`ts`) of the first fix that satisfied the rule's minimum duration, as in
`muck bench ingest`'s figure for the violation row.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading
import time

import numpy as np

from alerts.subscriptions import create_subscription, remove_subscription
from bench.ingest import COMPLETING_FIX, BenchReport, run_ingest_bench
from core.config import Settings
from core.db import connect_settings

_NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"


class _ReceiverProtocol(asyncio.Protocol):
    """One kept HTTP/1.1 connection of the dispatcher: each POST noted and answered 204.

    Deliberately minimal (Content-Length bodies only, what the dispatcher sends): the
    receiver runs on the same two cores as everything it measures, so its CPU per alert is
    charged to the alert path. `http.server` took 130-160 µs per request; this, about a
    fifth of that. A real receiver runs elsewhere."""

    def __init__(self, first: dict[int, float]) -> None:
        self.first = first
        self.buffer = b""

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            at = head.index(b"content-length:") + 15
            length = int(head[at:].split(b"\r\n", 1)[0])
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.first.setdefault(json.loads(body)["violation"]["id"], time.time())
            self.transport.write(_NO_CONTENT)


def _serve(pipe) -> None:
    """The receiver process: notes when each alert first arrived (violation id → epoch s)."""
    first: dict[int, float] = {}
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(
        loop.create_server(lambda: _ReceiverProtocol(first), "127.0.0.1", 0)
    )
    pipe.send(server.sockets[0].getsockname()[1])

    def commands() -> None:  # the benchmark asks for the receipts, then says stop
        async def copy() -> dict[int, float]:  # on the loop: no change while copying
            return dict(first)

        while pipe.recv() != "stop":
            pipe.send(asyncio.run_coroutine_threadsafe(copy(), loop).result())
        loop.call_soon_threadsafe(loop.stop)

    threading.Thread(target=commands, daemon=True).start()
    loop.run_forever()
    server.close()


class _Receiver:
    """The webhook receiver in a process of its own, as a real receiver is on another host.
    In the benchmark's process its threads would queue for the interpreter lock behind the
    publisher's 10,000 messages a second (each request needs it several times, and a waiting
    thread gets it only every switch interval, 5 ms): the receiver, not the dispatcher, would
    set the pace (session 6 measured it so: 600-700 alerts/s)."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child,), name="bench-receiver")
        self._process.start()
        self.port = self._pipe.recv()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/alerts"

    @property
    def pid(self) -> int:
        return self._process.pid

    def receipts(self) -> dict[int, float]:
        self._pipe.send("receipts")
        return self._pipe.recv()

    def stop(self) -> None:
        self._pipe.send("stop")
        self._process.join(10)


def run_alert_bench(
    settings: Settings,
    *,
    messages: int,
    devices: int,
    rate: float,
    publishers: int = 1,
    spread_s: float = 0.0,
) -> tuple[BenchReport, dict[str, float]]:
    """`spread_s` 0: every truck is loaded from the start, so all violations come in one
    burst after the rule's minimum duration; otherwise the trucks load one after another
    over `spread_s` seconds and their violations follow at the same pace."""
    receiver = _Receiver()
    conn = connect_settings(settings, application_name="muck-bench-alerts")
    with conn.cursor() as cur:
        sub = create_subscription(
            cur,
            owner_kind="team",
            owner="bench",
            channel="webhook",
            target=receiver.url,
            created_by="bench",
        )
    conn.commit()
    latency: dict[str, float] = {}

    def measure(conn, run: str) -> None:
        company = f"bench {run}"
        with conn.cursor() as cur:
            cur.execute(COMPLETING_FIX, (company,))
            completing = {vid: fix_time.timestamp() for vid, _, fix_time in cur.fetchall()}
        conn.commit()
        # Every alert of the run reaches the receiver (the dispatchers keep going).
        deadline = time.monotonic() + 60
        first = receiver.receipts()
        while time.monotonic() < deadline and not set(completing) <= set(first):
            time.sleep(0.5)
            first = receiver.receipts()
        ms = np.array([(first[v] - t) * 1000 for v, t in completing.items() if v in first])
        latency.update(violations=float(len(completing)), received=float(len(ms)))
        if len(ms):
            latency.update(
                {
                    "p50 ms": float(np.percentile(ms, 50)),
                    "p99 ms": float(np.percentile(ms, 99)),
                    "max ms": float(ms.max()),
                }
            )

    try:
        report = run_ingest_bench(
            settings,
            messages=messages,
            devices=devices,
            publishers=publishers,
            collectors=1,
            rate=rate,
            qos=1,
            measure_ceiling=False,
            registered=True,
            rules=True,
            measure=measure,
            load_stagger_s=spread_s,
        )
    finally:
        with conn.cursor() as cur:
            remove_subscription(cur, sub.id)
            cur.execute("DELETE FROM alert_outbox WHERE subscription_id = %s", (sub.id,))
            cur.execute("DELETE FROM alert_subscriptions WHERE id = %s", (sub.id,))
        conn.commit()
        conn.close()
        receiver.stop()
    return report, latency
