"""What an evidence record holds, and its canonical encoding.

The record is frozen when it is captured: everything an officer shows in court is copied
into it (fixes, sensor states, the zones and the permit as they were at the violation, the
camera sightings, the rule's thresholds, the terminal binding), so that nothing edited,
retained away or re-imported later changes it. Its canonical JSON (sorted keys, no spaces,
floats with at most 7 decimals, UTC times as ISO 8601 with a Z) is what is stored and
hashed: the same content always gives the same bytes, on any machine.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from typing import Any

import msgspec

SCHEMA = 1


class Fix(msgspec.Struct, kw_only=True):
    t: dt.datetime
    lat: float | None
    lon: float | None
    speed: float | None = None
    heading: int | None = None
    lid: str | None = None
    lift: str | None = None
    load: str | None = None
    acc: bool | None = None
    alarms: list[str] = []
    device: str | None = None
    in_episode: bool = False


class ZoneVersion(msgspec.Struct, kw_only=True):
    code: str
    #: why it is in the record: the violation's own zone, or the permit's origin / disposal
    #: site / route
    role: str
    kind: str
    name: str
    district: str | None = None
    valid_from: str | None = None
    valid_to: str | None = None
    active: bool = True
    geometry: dict[str, Any]
    attributes: dict[str, Any] = {}
    recorded_from: dt.datetime | None = None
    recorded_to: dt.datetime | None = None
    #: False: the zone did not exist yet when the violation started; this is its first version
    in_force: bool = True


class PermitVersion(msgspec.Struct, kw_only=True):
    number: str
    #: the permit row with company, plates, disposal sites and routes (permits' history)
    permit: dict[str, Any]
    recorded_from: dt.datetime | None = None
    recorded_to: dt.datetime | None = None
    in_force: bool = True


class Sighting(msgspec.Struct, kw_only=True):
    camera_id: str
    seen_at: dt.datetime
    plate: str
    plate_color: str | None = None
    direction: str | None = None
    site_id: str | None = None
    confidence: float | None = None
    image_ref: str | None = None
    #: seconds from the episode (0 inside it)
    offset_s: float = 0.0


class Terminal(msgspec.Struct, kw_only=True):
    device_id: str
    valid_from: dt.datetime
    valid_to: dt.datetime | None = None
    model: str | None = None


class RuleInForce(msgspec.Struct, kw_only=True):
    kind: str
    label_zh: str
    label_en: str
    #: the settings table of the rule ("rules.<kind>") and its values at capture time
    section: str
    table: dict[str, Any]
    #: the thresholds the rule recorded when it found the violation
    thresholds: dict[str, Any]
    legal_basis: str


class Measured(msgspec.Struct, kw_only=True):
    worst_value: float | None = None
    unit: str = ""
    duration_s: float | None = None
    severity: str = "minor"
    points: int = 0
    max_speed_kmh: float | None = None


class Facts(msgspec.Struct, kw_only=True):
    violation_id: int
    kind: str
    stream: str
    truck_id: int
    plate: str
    company: str | None = None
    credit_code: str | None = None
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    lat: float | None = None
    lon: float | None = None
    zone_code: str | None = None
    permit_no: str | None = None
    district_code: str | None = None
    detected_at: dt.datetime | None = None


class Evidence(msgspec.Struct, kw_only=True):
    schema: int = SCHEMA
    final: bool
    captured_at: dt.datetime
    timezone: str
    facts: Facts
    #: the fixes' time range (margins around the episode)
    window_from: dt.datetime
    window_to: dt.datetime
    #: True when max_fixes cut the fixes short
    truncated: bool = False
    fixes: list[Fix] = []
    zones: list[ZoneVersion] = []
    permits: list[PermitVersion] = []
    sightings: list[Sighting] = []
    terminals: list[Terminal] = []
    rule: RuleInForce
    measured: Measured


# ---- canonical encoding -------------------------------------------------------------------


def _time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r} in evidence: times must carry a zone")
    utc = value.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _float(value: float) -> str:
    if not math.isfinite(value):
        return "null"
    text = f"{value:.7f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, dt.datetime):
        out.append(json.dumps(_time(value)))
    elif isinstance(value, dt.date):
        out.append(json.dumps(value.isoformat()))
    elif isinstance(value, dict):
        out.append("{")
        for i, key in enumerate(sorted(value, key=str)):
            if i:
                out.append(",")
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, msgspec.Struct):
        _encode({f: getattr(value, f) for f in value.__struct_fields__}, out)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in evidence")


def canonical(value: Any) -> str:
    """The canonical JSON text of an evidence record (or any part of one)."""
    out: list[str] = []
    _encode(value, out)
    return "".join(out)


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def decode(text: str) -> Evidence:
    """The record from its stored canonical text (times back to aware datetimes)."""
    return msgspec.json.decode(text.encode("utf-8"), type=Evidence, strict=False)


def as_dict(evidence: Evidence) -> dict[str, Any]:
    """Plain JSON values (times as the canonical strings), e.g. for the API."""
    return json.loads(canonical(evidence))
