"""The gateway inside a collector's process, writing without the broker: `muck collect
--jt808 HOST:PORT`.

A location report is then acknowledged to the terminal (0x8001) after the collector has
committed it, instead of after the broker's PUBACK: the same promise (nothing acknowledged
is lost), one hop fewer. The collector does what it does with every message — validation,
quarantine, duplicates, the compliance rules, the clock jobs — because the gateway's fixes
enter it as the messages of a subscriber: `DirectFeed` keeps the collector's subscriber
contract (telemetry/transport.py) and `DirectUplink` the gateway's uplink contract, over
one table of fixes waiting for their commit.

Threads: the gateway's event loop hands each loop iteration's fixes to the collector's
lanes in one batch; a lane's commit comes back through `call_soon_threadsafe`. While the
collector holds `max_inflight` fixes uncommitted (a slow or absent database), the gateway
refuses new ones at once, so terminals are not acknowledged and keep them in their
blind-area buffer, as when the broker is away.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from telemetry.jt808.uplink import Uplink
from telemetry.transport import OnBatch, Received

log = logging.getLogger(__name__)


class DirectUplink(Uplink):
    """The gateway's side: fixes to the collector, accepted on commit."""

    def __init__(self, max_inflight: int = 20_000) -> None:
        super().__init__(max_inflight)
        self.feed = DirectFeed(self)
        self._pending: list[Received] = []
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = asyncio.Event()

    def publish_then(
        self,
        topic: str,
        payload: bytes,
        callback: Callable[[Any, bool], None],
        argument: Any = None,
        *,
        retain: bool = False,  # a retained status: the collector stores it like any other
    ) -> None:
        on_batch = self.feed.on_batch
        if on_batch is None or len(self._inflight) >= self.max_inflight:
            self.refused += 1
            callback(argument, False)
            return
        packet_id = self._take_id(callback, argument)
        self._pending.append(Received(topic, payload, packet_id, 1))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, []
        on_batch = self.feed.on_batch
        if pending and on_batch is not None:
            on_batch(self.feed.generation, pending)

    def committed(self, packet_ids: Sequence[int]) -> None:
        """From a writer lane: these are committed (runs their callbacks on the loop)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._acked, list(packet_ids))
        except RuntimeError:  # the loop closed meanwhile: the gateway has stopped
            pass

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.connected.set()
        log.info("gateway connected to the collector (direct: acknowledged after commit)")
        await self._closed.wait()

    async def close(self) -> None:
        self.connected.clear()
        self._fail_all()
        self._closed.set()


class DirectFeed:
    """The collector's side: a subscriber (telemetry/transport.py) fed by the gateway."""

    generation = 1  # one "connection" for the life of the process: acks are never stale

    def __init__(self, uplink: DirectUplink) -> None:
        self.uplink = uplink
        self.on_batch: OnBatch | None = None
        self.connected = threading.Event()

    def bind(self, on_batch: OnBatch) -> DirectFeed:
        self.on_batch = on_batch
        return self

    def start(self) -> None:
        self.connected.set()

    def ack(self, generation: int, packet_ids: Sequence[int]) -> bool:
        self.uplink.committed(packet_ids)
        return True

    def stop(self) -> None:
        self.connected.clear()
        self.on_batch = None
