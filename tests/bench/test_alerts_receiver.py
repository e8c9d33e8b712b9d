"""The alert benchmark's receiver (bench/alerts.py) notes every alert once, at its first
arrival, over kept connections — the figures in docs/performance.md depend on it."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from alerts.webhook import post
from bench.alerts import _Receiver


def test_the_receiver_notes_the_first_receipt_of_each_alert():
    receiver = _Receiver()
    try:
        before = time.time()
        bodies = [json.dumps({"violation": {"id": i % 50}, "pad": "x" * 3000}) for i in range(200)]
        with ThreadPoolExecutor(4) as pool:
            statuses = list(
                pool.map(lambda b: post(receiver.url, "s" * 32, b.encode(), "k", 5), bodies)
            )
        first = receiver.receipts()
    finally:
        receiver.stop()
    assert statuses == [204] * 200
    assert sorted(first) == list(range(50))
    assert all(before <= at <= time.time() for at in first.values())
