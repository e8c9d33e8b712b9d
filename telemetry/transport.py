"""What the collector needs from an MQTT client, and what a client hands it.

The collector reads messages in batches and acknowledges them only after their batch is
committed (docs/architecture.md). Any client that keeps this contract can carry the
telemetry: `telemetry/mqtt/lean.py` (MQTT 3.1.1, one pass over each socket read) and
`telemetry/mqtt/paho.py` (MQTT 5) do today.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol


class Received(NamedTuple):
    """One PUBLISH as it came off the wire (a tuple, so a batch of them stays cheap)."""

    topic: str
    payload: bytes
    packet_id: int  # 0 for QoS 0
    qos: int


# Called on the client's reader thread with the connection generation and the messages of one
# socket read (lean) or one message (paho); must not block for long.
OnBatch = Callable[[int, list[Received]], None]


class Subscriber(Protocol):
    """A client subscribed to the contract's topics at QoS 1 with a persistent session."""

    def start(self) -> None:
        """Connect (and reconnect with back-off) on a thread of its own."""

    def ack(self, generation: int, packet_ids: Sequence[int]) -> bool:
        """Acknowledge the committed messages of `generation`; ids of an earlier connection
        are dropped (the broker redelivers those). False if nothing could be sent."""

    def stop(self) -> None:
        """Disconnect and join the reader thread."""
