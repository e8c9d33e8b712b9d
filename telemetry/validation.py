"""Payload → validated rows or quarantine reasons. Never raises on any input.

Reason codes (docs/mqtt-contract.md lists them with examples):
oversized, malformed_json, missing_field, invalid_field, not_finite, out_of_range,
zero_position, bad_timestamp, future_time, too_old, topic_mismatch, empty_batch,
too_many_fixes, bad_topic. Later stages add implied_speed and duplicate_conflict.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from registry.validation import normalise_plate
from telemetry.contract import (
    ALARM_NAME,
    ORDERLY_REASONS,
    FixMessage,
    SightingMessage,
    StatusMessage,
)

_FIX_DECODER = msgspec.json.Decoder(FixMessage | list[FixMessage])
_ONE_FIX_DECODER = msgspec.json.Decoder(FixMessage)
_RAW_LIST_DECODER = msgspec.json.Decoder(list[msgspec.Raw])
_SIGHTING_DECODER = msgspec.json.Decoder(SightingMessage)
_STATUS_DECODER = msgspec.json.Decoder(StatusMessage)


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_fixes_per_message: int
    future_tolerance_ms: int
    past_horizon_ms: int

    @classmethod
    def from_settings(cls, ingest: dict) -> Limits:
        return cls(
            max_payload_bytes=int(ingest["max_payload_bytes"]),
            max_fixes_per_message=int(ingest["max_fixes_per_message"]),
            future_tolerance_ms=int(ingest["future_tolerance_s"]) * 1000,
            past_horizon_ms=int(ingest["past_horizon_days"]) * 86_400_000,
        )


@dataclass(slots=True)
class Fix:
    """A validated fix, ready to store. Times are epoch milliseconds UTC."""

    device_id: str
    fix_ms: int
    lat: float
    lon: float
    speed: float
    heading: int | None
    alt: float | None
    lid: str | None
    lift: str | None
    load: str | None
    weight_kg: float | None
    acc: bool | None
    alarms: list[str] | None
    sats: int | None
    hdop: float | None
    seq: int | None
    raw: bytes  # the JSON of this fix alone, for quarantine by later stages


@dataclass(slots=True)
class Rejection:
    reason: str
    detail: str
    raw: bytes


def _validation_reason(exc: msgspec.ValidationError) -> str:
    text = str(exc)
    if "missing required field" in text:
        return "missing_field"
    if "Number out of range" in text:
        return "not_finite"
    return "invalid_field"


def parse_time_ms(value: float | str | None) -> int:
    """Epoch ms (number) or ISO-8601 with an offset → epoch ms. Raises ValueError."""
    if isinstance(value, str):
        parsed = dt.datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError(f"ISO time without a UTC offset: {value!r}")
        return int(round(parsed.timestamp() * 1000))
    if value is None or not math.isfinite(value):
        raise ValueError(f"time must be a finite number: {value!r}")
    return int(round(value))


# Plausible ranges of the optional and measured fields (both checks in check_fix use them).
_SPEED = (0.0, 300.0)
_HEADING = (0.0, 360.0)
_ALT = (-500.0, 9000.0)
_WEIGHT = (0.0, 200_000.0)
_SATS = (0, 255)
_HDOP = (0.0, 100.0)
_SEQ = (0, 2**63 - 1)


def _optional_range(name: str, value: float | None, low: float, high: float) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} is not finite"
    if not low <= value <= high:
        return f"{name}={value} outside [{low}, {high}]"
    return None


def check_fix(
    msg: FixMessage, device_id: str, raw: bytes, now_ms: int, limits: Limits
) -> Fix | Rejection:
    """Semantic checks of one decoded fix."""
    lat, lon, speed, heading = msg.lat, msg.lon, msg.speed, msg.heading
    # The common case, a plausible fix, in one expression. Anything else (NaN compares false)
    # goes through the checks below, which name the reason; this saved a third of the cost.
    if (
        (msg.device is None or msg.device == device_id)
        and -90.0 <= lat <= 90.0
        and -180.0 <= lon <= 180.0
        and (lat != 0.0 or lon != 0.0)
        and _SPEED[0] <= speed <= _SPEED[1]
        and (heading is None or _HEADING[0] <= heading <= _HEADING[1])
        and (msg.alt is None or _ALT[0] <= msg.alt <= _ALT[1])
        and (msg.weight_kg is None or _WEIGHT[0] <= msg.weight_kg <= _WEIGHT[1])
        and (msg.hdop is None or _HDOP[0] <= msg.hdop <= _HDOP[1])
        and (msg.sats is None or _SATS[0] <= msg.sats <= _SATS[1])
        and (msg.seq is None or _SEQ[0] <= msg.seq <= _SEQ[1])
    ):
        return _checked_times(msg, device_id, raw, now_ms, limits)
    if msg.device is not None and msg.device != device_id:
        return Rejection(
            "topic_mismatch", f"payload device {msg.device!r} != topic {device_id!r}", raw
        )
    for name in ("lat", "lon", "speed"):
        if not math.isfinite(getattr(msg, name)):
            return Rejection("not_finite", f"{name} is not finite", raw)
    if not (-90.0 <= msg.lat <= 90.0 and -180.0 <= msg.lon <= 180.0):
        return Rejection("out_of_range", f"lat/lon ({msg.lat}, {msg.lon}) out of range", raw)
    if msg.lat == 0.0 and msg.lon == 0.0:
        return Rejection("zero_position", "position (0, 0) is a missing fix", raw)
    problem = (
        _optional_range("speed", msg.speed, *_SPEED)
        or _optional_range("heading", msg.heading, *_HEADING)
        or _optional_range("alt", msg.alt, *_ALT)
        or _optional_range("weight_kg", msg.weight_kg, *_WEIGHT)
        or _optional_range("sats", msg.sats, *_SATS)
        or _optional_range("hdop", msg.hdop, *_HDOP)
        or _optional_range("seq", msg.seq, *_SEQ)
    )
    if problem:
        reason = "not_finite" if "not finite" in problem else "out_of_range"
        return Rejection(reason, problem, raw)
    return _checked_times(msg, device_id, raw, now_ms, limits)


def _checked_times(
    msg: FixMessage, device_id: str, raw: bytes, now_ms: int, limits: Limits
) -> Fix | Rejection:
    """The checks after the ranges: alarm names and the fix time."""
    if msg.alarms is not None:
        bad = [a for a in msg.alarms if not ALARM_NAME.match(a)]
        if bad:
            return Rejection("invalid_field", f"alarm names must match [a-z0-9_]: {bad[:3]}", raw)
    try:
        fix_ms = parse_time_ms(msg.ts)
    except (ValueError, OverflowError) as exc:
        return Rejection("bad_timestamp", str(exc), raw)
    if fix_ms > now_ms + limits.future_tolerance_ms:
        return Rejection("future_time", f"fix time {fix_ms} ms is ahead of the clock", raw)
    if fix_ms < now_ms - limits.past_horizon_ms:
        return Rejection("too_old", f"fix time {fix_ms} ms is older than the horizon", raw)
    heading = None if msg.heading is None else int(round(msg.heading)) % 360
    return Fix(
        device_id,
        fix_ms,
        msg.lat,
        msg.lon,
        msg.speed,
        heading,
        msg.alt,
        msg.lid,
        msg.lift,
        msg.load,
        msg.weight_kg,
        msg.acc,
        msg.alarms,
        msg.sats,
        msg.hdop,
        msg.seq,
        raw,
    )


def decode_telemetry(
    device_id: str, payload: bytes, now_ms: int, limits: Limits
) -> tuple[list[Fix], list[Rejection]]:
    """One telemetry message (a fix or a batch re-upload) → valid fixes and rejections.

    In a batch, each element is judged on its own: one bad fix never loses the good ones.
    """
    if len(payload) > limits.max_payload_bytes:
        return [], [
            Rejection("oversized", f"{len(payload)} bytes > {limits.max_payload_bytes}", payload)
        ]
    try:
        decoded = _FIX_DECODER.decode(payload)
    except msgspec.ValidationError:
        return _decode_elementwise(device_id, payload, now_ms, limits)
    except msgspec.DecodeError as exc:
        return [], [Rejection("malformed_json", str(exc), payload)]
    if isinstance(decoded, FixMessage):
        result = check_fix(decoded, device_id, payload, now_ms, limits)
        return ([result], []) if isinstance(result, Fix) else ([], [result])
    # A batch decoded cleanly: split the raw text per element only if something is rejected.
    return _check_batch(decoded, None, device_id, payload, now_ms, limits)


def _check_batch(
    messages: list[FixMessage],
    raws: list[bytes] | None,
    device_id: str,
    payload: bytes,
    now_ms: int,
    limits: Limits,
) -> tuple[list[Fix], list[Rejection]]:
    if not messages:
        return [], [Rejection("empty_batch", "empty array", payload)]
    if len(messages) > limits.max_fixes_per_message:
        return [], [
            Rejection(
                "too_many_fixes",
                f"{len(messages)} fixes > {limits.max_fixes_per_message}",
                payload,
            )
        ]
    if raws is None:
        raws = [bytes(r) for r in _RAW_LIST_DECODER.decode(payload)]
    fixes: list[Fix] = []
    rejections: list[Rejection] = []
    for msg, raw in zip(messages, raws, strict=True):
        result = check_fix(msg, device_id, raw, now_ms, limits)
        (fixes if isinstance(result, Fix) else rejections).append(result)
    return fixes, rejections


def _decode_elementwise(
    device_id: str, payload: bytes, now_ms: int, limits: Limits
) -> tuple[list[Fix], list[Rejection]]:
    try:
        raws = _RAW_LIST_DECODER.decode(payload)
    except msgspec.ValidationError:
        # Not an array: a single object that failed validation.
        try:
            _ONE_FIX_DECODER.decode(payload)
        except msgspec.ValidationError as exc:
            return [], [Rejection(_validation_reason(exc), str(exc), payload)]
        except msgspec.DecodeError as exc:  # pragma: no cover - malformed caught earlier
            return [], [Rejection("malformed_json", str(exc), payload)]
        return [], [
            Rejection("invalid_field", "payload is neither an object nor an array", payload)
        ]
    except msgspec.DecodeError as exc:
        return [], [Rejection("malformed_json", str(exc), payload)]
    if len(raws) > limits.max_fixes_per_message:
        return [], [
            Rejection(
                "too_many_fixes", f"{len(raws)} fixes > {limits.max_fixes_per_message}", payload
            )
        ]
    fixes: list[Fix] = []
    rejections: list[Rejection] = []
    for index, raw in enumerate(raws):
        raw_bytes = bytes(raw)
        try:
            msg = _ONE_FIX_DECODER.decode(raw_bytes)
        except msgspec.ValidationError as exc:
            rejections.append(Rejection(_validation_reason(exc), f"[{index}] {exc}", raw_bytes))
            continue
        result = check_fix(msg, device_id, raw_bytes, now_ms, limits)
        (fixes if isinstance(result, Fix) else rejections).append(result)
    return fixes, rejections


@dataclass(slots=True)
class Sighting:
    camera_id: str
    seen_ms: int
    plate: str
    plate_color: str | None
    direction: str | None
    site_id: str | None
    confidence: float | None
    image_ref: str | None


def decode_sighting(
    camera_id: str, payload: bytes, now_ms: int, limits: Limits
) -> Sighting | Rejection:
    if len(payload) > limits.max_payload_bytes:
        return Rejection("oversized", f"{len(payload)} bytes > {limits.max_payload_bytes}", payload)
    try:
        msg = _SIGHTING_DECODER.decode(payload)
    except msgspec.ValidationError as exc:
        return Rejection(_validation_reason(exc), str(exc), payload)
    except msgspec.DecodeError as exc:
        return Rejection("malformed_json", str(exc), payload)
    plate = normalise_plate(msg.plate)
    if not 5 <= len(plate) <= 16:
        return Rejection("invalid_field", f"plate {msg.plate!r} has an implausible length", payload)
    if msg.confidence is not None and not (
        math.isfinite(msg.confidence) and 0.0 <= msg.confidence <= 1.0
    ):
        return Rejection("out_of_range", f"confidence={msg.confidence} outside [0, 1]", payload)
    try:
        seen_ms = parse_time_ms(msg.ts)
    except (ValueError, OverflowError) as exc:
        return Rejection("bad_timestamp", str(exc), payload)
    if seen_ms > now_ms + limits.future_tolerance_ms:
        return Rejection("future_time", "sighting time is ahead of the clock", payload)
    if seen_ms < now_ms - limits.past_horizon_ms:
        return Rejection("too_old", "sighting time is older than the horizon", payload)
    for name in ("plate_color", "site_id", "image_ref"):
        value = getattr(msg, name)
        if value is not None and len(value) > 512:
            return Rejection("invalid_field", f"{name} longer than 512 characters", payload)
    return Sighting(
        camera_id,
        seen_ms,
        plate,
        msg.plate_color,
        msg.direction,
        msg.site_id,
        msg.confidence,
        msg.image_ref,
    )


class Status(NamedTuple):
    status: str  # online / offline
    ms: int  # device time when the terminal gave one, else when it was received
    orderly: bool  # an `offline` the terminal sent itself, with its time and a shutdown reason


def decode_status(payload: bytes, now_ms: int) -> Status | Rejection:
    """Plain `online`/`offline` (as a last will usually is) or {"status": ..., "ts": ...}."""
    text = payload.strip()
    if text in (b"online", b"offline"):
        return Status(text.decode(), now_ms, False)
    try:
        msg = _STATUS_DECODER.decode(payload)
    except msgspec.ValidationError as exc:
        return Rejection(_validation_reason(exc), str(exc), payload)
    except msgspec.DecodeError as exc:
        return Rejection("malformed_json", str(exc), payload)
    if msg.ts is None:
        return Status(msg.status, now_ms, False)
    try:
        orderly = msg.status == "offline" and msg.reason in ORDERLY_REASONS
        return Status(msg.status, parse_time_ms(msg.ts), orderly)
    except (ValueError, OverflowError) as exc:
        return Rejection("bad_timestamp", str(exc), payload)
