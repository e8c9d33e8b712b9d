"""From received MQTT messages to a stored batch, independent of the MQTT client.

Stage order (left to right, as in docs/architecture.md): route by topic → decode and validate
→ bind device to truck → implied-speed filter → store (COPY) → after-store hooks (rules).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from core.config import Settings
from telemetry.bindings import TerminalBindings
from telemetry.cleaning import ImpliedSpeedFilter
from telemetry.contract import Topics
from telemetry.stats import IngestStats
from telemetry.store import AfterStore, Batch, BatchWriter, Quarantined, WriteResult
from telemetry.transport import Received
from telemetry.validation import (
    Limits,
    Rejection,
    decode_sighting,
    decode_status,
    decode_telemetry,
)


class Incoming(NamedTuple):
    """One message to ingest where no MQTT client received it (benchmarks, replays, tests).
    `Ingestor.build` reads only `topic` and `payload`, so the clients' `Received` messages
    are passed as they are: building another object per message cost the collector 1.6 µs."""

    topic: str
    payload: bytes


_TOPIC_CACHE_LIMIT = 500_000


def now_ms() -> int:
    return int(time.time() * 1000)


class Ingestor:
    def __init__(self, settings: Settings, stats: IngestStats | None = None) -> None:
        ingest = settings.ingest
        self.topics = Topics(settings.mqtt["topic_prefix"])
        self.limits = Limits.from_settings(ingest)
        self.stats = stats or IngestStats()
        self.bindings = TerminalBindings()
        self.speed_filter = ImpliedSpeedFilter(
            float(ingest["max_implied_speed_kmh"]), float(ingest["implied_speed_min_distance_m"])
        )
        self.quarantine_payload_bytes = int(ingest["quarantine_payload_bytes"])
        # topic → Topics.parse(topic): a fleet sends on the same topics all day, and parsing
        # one (split and a regular expression) cost 2 µs per message.
        self._parsed_topics: dict[str, tuple | None] = {}

    def _parse_topic(self, topic: str) -> tuple | None:
        parsed = self.topics.parse(topic)
        cache = self._parsed_topics
        if len(cache) >= _TOPIC_CACHE_LIMIT:
            cache.clear()  # bounds memory when a client sends on ever new (bad) topics
        cache[topic] = parsed
        return parsed

    def make_writer(self, conn, after_store: Sequence[AfterStore] = ()) -> BatchWriter:
        return BatchWriter(conn, self.quarantine_payload_bytes, after_store, self.topics)

    def build(self, messages: Sequence[Incoming | Received], cur) -> Batch:
        """Decode and validate; `cur` is used only to refresh terminal bindings."""
        received = now_ms()
        batch = Batch(received_ms=received)
        quarantine = batch.quarantined

        def reject(topic: str, ident: str | None, rejection: Rejection) -> None:
            quarantine.append(
                Quarantined(
                    received, topic, ident, rejection.reason, rejection.detail, rejection.raw
                )
            )

        parsed_topics = self._parsed_topics
        for message in messages:
            topic, payload = message.topic, message.payload
            parsed = parsed_topics[topic] if topic in parsed_topics else self._parse_topic(topic)
            if parsed is None:
                reject(
                    topic,
                    None,
                    Rejection("bad_topic", "topic outside the MQTT contract", payload),
                )
                continue
            kind, ident = parsed
            if kind == "telemetry":
                fixes, rejections = decode_telemetry(ident, payload, received, self.limits)
                batch.fixes.extend(fixes)
                for rejection in rejections:
                    reject(topic, ident, rejection)
            elif kind == "sightings":
                result = decode_sighting(ident, payload, received, self.limits)
                if isinstance(result, Rejection):
                    reject(topic, ident, result)
                else:
                    batch.sightings.append(result)
            else:
                status = decode_status(payload, received)
                if isinstance(status, Rejection):
                    reject(topic, ident, status)
                else:
                    previous = batch.statuses.get(ident)
                    if previous is None or previous[1] <= status[1]:
                        batch.statuses[ident] = status

        if batch.fixes:
            self.bindings.prepare(cur, {f.device_id for f in batch.fixes})
            kept = []
            check = self.speed_filter.check
            for fix in batch.fixes:
                rejection = check(fix)
                if rejection is None:
                    kept.append(fix)
                else:
                    reject(self.topics.telemetry(fix.device_id), fix.device_id, rejection)
            batch.fixes = kept
            truck_at = self.bindings.truck_at
            batch.truck_ids = [truck_at(f.device_id, f.fix_ms) for f in kept]
        return batch

    def count(self, batch: Batch, result: WriteResult, messages: int, seconds: float) -> None:
        stats = self.stats
        stats.received.inc(messages)
        stats.fixes_stored.inc(result.stored)
        stats.duplicates.inc(result.duplicates)
        stats.sightings.inc(result.sightings_stored)
        stats.batches.inc()
        stats.batch_seconds.observe(seconds)
        for q in batch.quarantined + result.conflicts:
            stats.quarantined.labels(q.reason).inc()
        if batch.fixes:
            newest = max(f.fix_ms for f in batch.fixes)
            stats.lag_seconds.set(max(0.0, (batch.received_ms - newest) / 1000))
