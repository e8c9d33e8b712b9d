"""A JT/T 808 location → one fix of the MQTT contract (docs/mqtt-contract.md).

JT/T 808 has no standard field for a muck truck's lid (密闭), dump-body lift (举升) or load
weight, and the load bits (status bits 8-9) are not used by every terminal: cities and
vendors put them in status bits or additional items of their own. Which bit or item gives
`lid`, `lift`, `load` and `weight_kg` is therefore city configuration ([jt808] in the
settings): a named profile and, per field, an optional source that overrides it. A source
is a short expression:

    status & 0x300: 0=empty, 1=half, 3=full     the status word, masked, value → name
    item 0xE1 & 0x01: 0=closed, 1=open          an additional item (its bytes big-endian)
    item 0xF3[3:5] * 10                         bytes 3-4 of item 0xF3, times 10 (a number)
    none                                        not reported

A value with no name in the list, or an item the report does not carry, leaves the field out
of the fix (the contract's fields are optional). docs/jt808.md documents the profiles.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from telemetry.jt808.messages import Location, read_items

ALLOWED = {
    "lid": ("closed", "open"),
    "lift": ("down", "up"),
    "load": ("empty", "half", "full"),
    "weight_kg": None,  # a number
}

PROFILES: dict[str, dict[str, str]] = {
    # The documented default: load from the standard status bits 8-9, lid and lift from a
    # vendor item 0xE1 (bit 0 lid open, bit 1 body up), weight in kg as the DWORD item 0xE2.
    "default": {
        "load": "status & 0x300: 0=empty, 1=half, 3=full",
        "lid": "item 0xE1 & 0x01: 0=closed, 1=open",
        "lift": "item 0xE1 & 0x02: 0=down, 1=up",
        "weight_kg": "item 0xE2 * 1",
    },
    # Example 1: terminals without vendor items, the sensors wired to door inputs: the cover
    # on the rear-door bit (15), the lift on the custom-door bit (17); no weighing.
    "door_bits": {
        "load": "status & 0x300: 0=empty, 1=half, 3=full",
        "lid": "status & 0x8000: 0=closed, 1=open",
        "lift": "status & 0x20000: 0=down, 1=up",
        "weight_kg": "none",
    },
    # Example 2: one vendor item 0xF3 with a byte per sensor (lid, lift, load 0/1/2) and the
    # weight in units of 10 kg in bytes 3-4.
    "vendor_f3": {
        "lid": "item 0xF3[0:1] & 0x01: 0=closed, 1=open",
        "lift": "item 0xF3[1:2]: 0=down, 1=up",
        "load": "item 0xF3[2:3]: 0=empty, 1=half, 2=full",
        "weight_kg": "item 0xF3[3:5] * 10",
    },
}

# Alarm flag bits (JT/T 808 table "报警标志位定义", the same bits in 2013 and 2019) → the
# contract's alarm names. The three the rules use first; unnamed bits as alarm_bit_<n>.
ALARM_BITS: dict[int, str] = {
    0: "emergency",
    1: "overspeed",
    2: "fatigue_driving",
    3: "danger_warning",
    4: "gnss_fault",
    5: "antenna_cut",  # GNSS antenna not connected or cut
    6: "antenna_cut",  # GNSS antenna short circuit: the fix is as lost as with a cut
    7: "power_undervoltage",
    8: "power_cut",
    9: "lcd_fault",
    10: "tts_fault",
    11: "camera_fault",
    12: "ic_card_fault",
    13: "overspeed_warning",
    14: "fatigue_warning",
    18: "driving_overtime",
    19: "parking_overtime",
    20: "area_in_out",
    21: "route_in_out",
    22: "route_time",
    23: "route_deviation",
    24: "vss_fault",
    25: "fuel_abnormal",
    26: "stolen",
    27: "illegal_ignition",
    28: "illegal_displacement",
    29: "collision_warning",
    30: "rollover_warning",
    31: "illegal_door_open",
}


def alarm_names(alarm: int) -> list[str]:
    names: list[str] = []
    bit = 0
    while alarm:
        if alarm & 1:
            name = ALARM_BITS.get(bit, f"alarm_bit_{bit}")
            if name not in names:
                names.append(name)
        alarm >>= 1
        bit += 1
    return names


_SOURCE = re.compile(
    r"^\s*(?:(?P<status>status)|item\s+(?P<item>0x[0-9a-fA-F]{1,2}|\d{1,3})"
    r"(?:\[(?P<start>\d+):(?P<stop>\d+)\])?)"
    r"\s*(?:&\s*(?P<mask>0x[0-9a-fA-F]+|\d+))?"
    r"\s*(?:\*\s*(?P<scale>\d+(?:\.\d+)?)|:\s*(?P<values>.+))?\s*$"
)


class MappingError(ValueError):
    """A source expression that cannot be used; the message names the field."""


Reader = Callable[[Location], Any]


def compile_source(name: str, text: str) -> Reader | None:
    """The source expression of field `name` → a function of a Location (None: not mapped)."""
    if text.strip().lower() in ("", "none"):
        return None
    match = _SOURCE.match(text)
    if match is None:
        raise MappingError(f"jt808.{name}: cannot read source {text!r}")
    allowed = ALLOWED[name]
    mask = int(match["mask"], 0) if match["mask"] else None
    shift = (mask & -mask).bit_length() - 1 if mask else 0
    values: dict[int, str] | None = None
    scale = float(match["scale"]) if match["scale"] else None
    if allowed is None:
        if match["values"]:
            raise MappingError(f"jt808.{name}: a number takes '* scale', not a value list")
        scale = 1.0 if scale is None else scale
    else:
        if not match["values"]:
            raise MappingError(f"jt808.{name}: needs a value list like 0={allowed[0]}")
        values = {}
        for pair in match["values"].split(","):
            key, _, label = pair.partition("=")
            label = label.strip()
            if not key.strip().isdigit() or label not in allowed:
                raise MappingError(
                    f"jt808.{name}: {pair.strip()!r} must be <number>=<{'|'.join(allowed)}>"
                )
            values[int(key)] = label
    if match["status"]:

        def word(loc: Location) -> int | None:
            return loc.status

    else:
        item = int(match["item"], 0)
        start = int(match["start"]) if match["start"] is not None else None
        stop = int(match["stop"]) if match["stop"] is not None else None
        if item > 0xFF or (start is not None and stop <= start):  # type: ignore[operator]
            raise MappingError(f"jt808.{name}: bad item or byte range in {text!r}")

        def word(loc: Location) -> int | None:
            raw = loc.items.get(item)
            if raw is None:
                return None
            if start is not None:
                raw = raw[start:stop]
                if len(raw) != stop - start:  # type: ignore[operator]
                    return None
            return int.from_bytes(raw, "big") if raw else None

    def read(loc: Location) -> Any:
        value = word(loc)
        if value is None:
            return None
        if mask is not None:
            value = (value & mask) >> shift
        if values is not None:
            return values.get(value)
        return value * scale  # type: ignore[operator]

    return read


@dataclass
class FixMapping:
    """The city's mapping of status bits and items to the contract's sensor fields."""

    readers: dict[str, Reader]

    @classmethod
    def from_settings(cls, section: dict[str, Any]) -> FixMapping:
        profile = section.get("profile", "default")
        if profile not in PROFILES:
            raise MappingError(
                f"jt808.profile: unknown profile {profile!r}; one of {', '.join(PROFILES)}"
            )
        readers: dict[str, Reader] = {}
        for name in ALLOWED:
            text = section.get(name) or PROFILES[profile].get(name, "none")
            reader = compile_source(name, text)
            if reader is not None:
                readers[name] = reader
        return cls(readers)

    def fix(self, loc: Location, seq: int | None = None) -> dict[str, Any]:
        """The contract's JSON object for one location (unknown items kept raw, in hex)."""
        status = loc.status
        body: dict[str, Any] = {
            "ts": loc.fix_ms,
            "lat": round(loc.lat, 6),
            "lon": round(loc.lon, 6),
            "speed": loc.speed_kmh,
            "heading": loc.heading,
            "alt": float(loc.alt_m),
            "acc": bool(status & 0x01),
        }
        if not status & 0x02:
            body["positioned"] = False  # the terminal says it has no fix (informative)
        for name, read in self.readers.items():
            value = read(loc)
            if value is not None:
                body[name] = value
        if loc.alarm:
            body["alarms"] = alarm_names(loc.alarm)
        if loc.items:
            known, unknown = read_items(loc.items)
            body.update(known)  # sats is the contract's; the others are extra fields
            if unknown:
                body["jt808_items"] = {f"{k:02x}": v.hex() for k, v in unknown.items()}
        if seq is not None:
            body["seq"] = seq
        return body
