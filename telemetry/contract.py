"""The MQTT contract: topics and payload types (documented in docs/mqtt-contract.md).

Decoding is msgspec: typed, validated and several times faster than json + hand checks.
Range checks that need a reason code of their own happen in telemetry.validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import msgspec

DEVICE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
ALARM_NAME = re.compile(r"^[a-z0-9_]{1,32}$")
KNOWN_ALARMS = ("antenna_cut", "power_cut", "gnss_fault")


class FixMessage(msgspec.Struct, omit_defaults=True):
    """One telemetry fix as a terminal sends it. Unknown fields are ignored (forward compatible)."""

    ts: float | str  # epoch milliseconds UTC, or ISO-8601 with an offset
    lat: float
    lon: float
    speed: float  # km/h
    heading: float | None = None  # degrees, 0-359
    alt: float | None = None  # metres
    lid: Literal["closed", "open"] | None = None
    lift: Literal["down", "up"] | None = None
    load: Literal["empty", "half", "full"] | None = None
    weight_kg: float | None = None
    acc: bool | None = None
    alarms: list[str] | None = None
    sats: int | None = None
    hdop: float | None = None
    seq: int | None = None
    device: str | None = None  # optional; must equal the topic's device id when present


class SightingMessage(msgspec.Struct):
    """A plate read by an ANPR camera at a site gate or checkpoint."""

    ts: float | str
    plate: str
    plate_color: str | None = None
    direction: Literal["in", "out", "pass"] | None = None
    site_id: str | None = None
    confidence: float | None = None
    image_ref: str | None = None


class StatusMessage(msgspec.Struct):
    status: Literal["online", "offline"]
    ts: float | str | None = None
    # Why the terminal goes offline, when it says so itself before disconnecting: one of
    # ORDERLY_REASONS marks an orderly shutdown (a last will carries none).
    reason: str | None = None


# An `offline` status with one of these reasons (and the terminal's own `ts`) is an orderly
# shutdown: the engine switched off, JT/T 808 terminal log-out (终端注销).
ORDERLY_REASONS = ("shutdown", "logout")


TopicKind = Literal["telemetry", "status", "sightings"]


@dataclass(frozen=True)
class Topics:
    """Topic names under a configurable prefix (default muck/v1)."""

    prefix: str = "muck/v1"

    def telemetry(self, device_id: str) -> str:
        return f"{self.prefix}/trucks/{device_id}/telemetry"

    def status(self, device_id: str) -> str:
        return f"{self.prefix}/trucks/{device_id}/status"

    def sightings(self, camera_id: str) -> str:
        return f"{self.prefix}/checkpoints/{camera_id}/sightings"

    def subscriptions(self) -> list[str]:
        return [
            f"{self.prefix}/trucks/+/telemetry",
            f"{self.prefix}/trucks/+/status",
            f"{self.prefix}/checkpoints/+/sightings",
        ]

    def parse(self, topic: str) -> tuple[TopicKind, str] | None:
        """(kind, device or camera id) or None for a topic outside the contract."""
        if not topic.startswith(self.prefix + "/"):
            return None
        parts = topic[len(self.prefix) + 1 :].split("/")
        if len(parts) != 3 or not DEVICE_ID.match(parts[1]):
            return None
        family, ident, leaf = parts
        if family == "trucks" and leaf in ("telemetry", "status"):
            return leaf, ident  # type: ignore[return-value]
        if family == "checkpoints" and leaf == "sightings":
            return "sightings", ident
        return None
