"""`muck bench webhook`: the CPU one webhook POST costs, sender and receiver.

The dispatcher's senders (`alerts.webhook.post`, on `threads` threads and kept connections)
POST `posts` alerts of about 1 KB to the alert benchmark's receiver (bench/alerts.py, a
process of its own). No database, no broker: what an alert costs on the wire, the figure
that decides how fast a burst of alerts drains while ingestion keeps the cores busy.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import psutil

from alerts.webhook import post
from bench.alerts import _Receiver


def run_webhook_bench(*, posts: int, threads: int) -> dict[str, float]:
    receiver = _Receiver()
    try:
        bodies = [
            json.dumps({"violation": {"id": i}, "pad": "x" * 900}).encode() for i in range(posts)
        ]
        served_by = psutil.Process(receiver.pid)
        receiver_before = sum(served_by.cpu_times()[:2])
        me = psutil.Process()
        sender_before = sum(me.cpu_times()[:2])
        started = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda b: post(receiver.url, "s" * 32, b, "bench", 5.0), bodies))
        seconds = time.perf_counter() - started
        sender = sum(me.cpu_times()[:2]) - sender_before
        received = sum(served_by.cpu_times()[:2]) - receiver_before
        noted = len(receiver.receipts())
    finally:
        receiver.stop()
    return {
        "posts/s": posts / seconds,
        "sender µs/post": sender / posts * 1e6,
        "receiver µs/post": received / posts * 1e6,
        "received": float(noted),
    }
