"""JT/T 808 message bodies: decoders for what terminals send, encoders for the replies (and,
for the simulator and the tests, the other way round).

Message ids handled by the gateway (docs/jt808.md has the table):
terminal → platform 0x0001 general reply, 0x0002 heartbeat, 0x0003 logout, 0x0100 register,
0x0102 authenticate, 0x0200 location report, 0x0201 position query reply, 0x0704 batch
upload; platform → terminal 0x8001 general reply, 0x8003 retransmission request, 0x8100
register reply, 0x8201 position query.

Like the framing, decoders return a `Problem` (reason code, detail) instead of raising.
"""

from __future__ import annotations

import calendar
import struct
import time
from dataclasses import dataclass, field

from telemetry.jt808.frames import Problem

# Message ids.
TERMINAL_REPLY = 0x0001
HEARTBEAT = 0x0002
LOGOUT = 0x0003
REGISTER = 0x0100
AUTHENTICATE = 0x0102
LOCATION = 0x0200
QUERY_REPLY = 0x0201
BATCH = 0x0704
PLATFORM_REPLY = 0x8001
RETRANSMIT = 0x8003
REGISTER_REPLY = 0x8100
QUERY = 0x8201

# 0x8001 / 0x0001 result codes.
OK = 0
FAILURE = 1
MESSAGE_ERROR = 2
NOT_SUPPORTED = 3
ALARM_CONFIRMED = 4

# 0x8100 result codes.
REGISTERED = 0
VEHICLE_ALREADY_REGISTERED = 1
NO_SUCH_VEHICLE = 2
TERMINAL_ALREADY_REGISTERED = 3
NO_SUCH_TERMINAL = 4

# 0x0704 type byte.
BATCH_NORMAL = 0
BATCH_BLIND_AREA = 1

SHORT_BODY = "jt808_short_body"
BAD_TIME = "jt808_bad_time"
BAD_FIELD = "jt808_bad_field"

_LOCATION = struct.Struct("!IIIIHHH6s")
_GMT8_S = 8 * 3600


@dataclass(slots=True)
class Location:
    """A 0x0200 location body. Coordinates signed by the status bits (south, west)."""

    alarm: int
    status: int
    lat: float
    lon: float
    alt_m: int
    speed_kmh: float
    heading: int
    fix_ms: int  # epoch ms UTC (the body's time is BCD in GMT+8)
    items: dict[int, bytes] = field(default_factory=dict)  # additional items, raw


def bcd_time_ms(raw: bytes) -> int | None:
    """YYMMDDhhmmss BCD in GMT+8 → epoch ms UTC; None for an impossible date."""
    text = raw.hex()
    if not text.isdigit():
        return None
    year, month, day = 2000 + int(text[0:2]), int(text[2:4]), int(text[4:6])
    hour, minute, second = int(text[6:8]), int(text[8:10]), int(text[10:12])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour < 24 and minute < 60 and second < 60):
        return None
    if day > calendar.monthrange(year, month)[1]:
        return None
    epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0)) - _GMT8_S
    return epoch * 1000


def to_bcd_time(fix_ms: int) -> bytes:
    """Epoch ms UTC → YYMMDDhhmmss BCD in GMT+8 (milliseconds dropped, as terminals do)."""
    g = time.gmtime(fix_ms // 1000 + _GMT8_S)
    digits = (g.tm_year % 100, g.tm_mon, g.tm_mday, g.tm_hour, g.tm_min, g.tm_sec)
    return bytes.fromhex("".join(f"{d:02d}" for d in digits))


def decode_location(body: bytes, offset: int = 0, end: int | None = None) -> Location | Problem:
    end = len(body) if end is None else end
    if end - offset < _LOCATION.size:
        return Problem(SHORT_BODY, f"location of {end - offset} bytes < {_LOCATION.size}", body)
    alarm, status, lat, lon, alt, speed, heading, when = _LOCATION.unpack_from(body, offset)
    fix_ms = bcd_time_ms(when)
    if fix_ms is None:
        return Problem(BAD_TIME, f"impossible time {when.hex()}", body)
    items: dict[int, bytes] = {}
    pos = offset + _LOCATION.size
    while pos + 2 <= end:
        item_id, size = body[pos], body[pos + 1]
        if pos + 2 + size > end:
            return Problem(
                SHORT_BODY, f"additional item 0x{item_id:02x} cut short at byte {pos}", body
            )
        items[item_id] = body[pos + 2 : pos + 2 + size]
        pos += 2 + size
    if pos != end:
        return Problem(SHORT_BODY, f"one stray byte after the additional items at {pos}", body)
    lat_deg = lat / 1e6
    lon_deg = lon / 1e6
    if status & 0x04:
        lat_deg = -lat_deg
    if status & 0x08:
        lon_deg = -lon_deg
    if alt >= 0x8000:  # altitude is a WORD; below sea level arrives as two's complement
        alt -= 0x10000
    return Location(alarm, status, lat_deg, lon_deg, alt, speed / 10.0, heading, fix_ms, items)


# Standard additional items: id → (contract-side name, byte size, scale).
STANDARD_ITEMS: dict[int, tuple[str, int, float]] = {
    0x01: ("mileage_km", 4, 0.1),
    0x02: ("fuel_l", 2, 0.1),
    0x03: ("recorder_speed_kmh", 2, 0.1),
    0x25: ("signal_status", 4, 1),  # extended vehicle signal status bits
    0x2A: ("io_status", 2, 1),
    0x30: ("signal_strength", 1, 1),
    0x31: ("sats", 1, 1),
}


def read_items(items: dict[int, bytes]) -> tuple[dict[str, float | int], dict[int, bytes]]:
    """The standard items by name, and the others raw (a standard item of the wrong size
    is kept raw too: never an error)."""
    known: dict[str, float | int] = {}
    unknown: dict[int, bytes] = {}
    for item_id, raw in items.items():
        spec = STANDARD_ITEMS.get(item_id)
        if spec is None or len(raw) != spec[1]:
            unknown[item_id] = raw
            continue
        value = int.from_bytes(raw, "big")
        known[spec[0]] = value if spec[2] == 1 else round(value * spec[2], 1)
    return known, unknown


def encode_location(loc: Location) -> bytes:
    lat = round(abs(loc.lat) * 1e6)
    lon = round(abs(loc.lon) * 1e6)
    status = loc.status
    status = (status | 0x04) if loc.lat < 0 else (status & ~0x04)
    status = (status | 0x08) if loc.lon < 0 else (status & ~0x08)
    body = _LOCATION.pack(
        loc.alarm & 0xFFFFFFFF,
        status & 0xFFFFFFFF,
        lat,
        lon,
        loc.alt_m & 0xFFFF,
        round(loc.speed_kmh * 10),
        loc.heading,
        to_bcd_time(loc.fix_ms),
    )
    extra = b"".join(bytes([k, len(v)]) + v for k, v in loc.items.items())
    return body + extra


@dataclass(slots=True)
class Batch:
    kind: int  # BATCH_NORMAL or BATCH_BLIND_AREA
    locations: list[Location]


def decode_batch(body: bytes) -> Batch | Problem:
    if len(body) < 3:
        return Problem(SHORT_BODY, f"batch of {len(body)} bytes", body)
    count, kind = struct.unpack_from("!HB", body)
    if kind not in (BATCH_NORMAL, BATCH_BLIND_AREA):
        return Problem(BAD_FIELD, f"batch type {kind} is neither 0 nor 1", body)
    pos, locations = 3, []
    for k in range(count):
        if pos + 2 > len(body):
            return Problem(SHORT_BODY, f"batch says {count} reports, found {k}", body)
        (size,) = struct.unpack_from("!H", body, pos)
        pos += 2
        if pos + size > len(body):
            return Problem(SHORT_BODY, f"report {k} of the batch cut short", body)
        loc = decode_location(body, pos, pos + size)
        if isinstance(loc, Problem):
            loc.detail = f"report {k} of the batch: {loc.detail}"
            return loc
        locations.append(loc)
        pos += size
    if pos != len(body):
        return Problem(BAD_FIELD, f"{len(body) - pos} bytes after {count} reports", body)
    return Batch(kind, locations)


def encode_batch(locations: list[Location], kind: int = BATCH_BLIND_AREA) -> bytes:
    parts = [struct.pack("!HB", len(locations), kind)]
    for loc in locations:
        raw = encode_location(loc)
        parts.append(struct.pack("!H", len(raw)) + raw)
    return b"".join(parts)


@dataclass(slots=True)
class QueryReply:
    reply_serial: int
    location: Location


def decode_query_reply(body: bytes) -> QueryReply | Problem:
    if len(body) < 2:
        return Problem(SHORT_BODY, "position query reply without a serial", body)
    loc = decode_location(body, 2)
    if isinstance(loc, Problem):
        return loc
    return QueryReply(struct.unpack_from("!H", body)[0], loc)


def encode_query_reply(reply_serial: int, loc: Location) -> bytes:
    return struct.pack("!H", reply_serial) + encode_location(loc)


# --- registration and authentication -------------------------------------------------------


def _text(raw: bytes) -> str:
    """A fixed-width string field: GBK, NUL (or space) padded, as terminals send it."""
    return raw.rstrip(b"\x00 ").decode("gbk", errors="replace")


def _pad(text: str, size: int) -> bytes:
    raw = text.encode("gbk")[:size]
    return raw + b"\x00" * (size - len(raw))


# (manufacturer, model, terminal id) widths by edition.
_REGISTER_WIDTHS = {2013: (5, 20, 7), 2019: (11, 30, 30)}


@dataclass(slots=True)
class Registration:
    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_color: int
    plate: str


def decode_register(body: bytes, edition: int) -> Registration | Problem:
    maker, model, ident = _REGISTER_WIDTHS[edition]
    fixed = 4 + maker + model + ident + 1
    if len(body) < fixed:
        return Problem(SHORT_BODY, f"registration of {len(body)} bytes < {fixed}", body)
    province, city = struct.unpack_from("!HH", body)
    pos = 4
    fields = []
    for width in (maker, model, ident):
        fields.append(_text(body[pos : pos + width]))
        pos += width
    return Registration(
        province, city, fields[0], fields[1], fields[2], body[pos], _text(body[pos + 1 :])
    )


def encode_register(reg: Registration, edition: int) -> bytes:
    maker, model, ident = _REGISTER_WIDTHS[edition]
    return (
        struct.pack("!HH", reg.province, reg.city)
        + _pad(reg.manufacturer, maker)
        + _pad(reg.model, model)
        + _pad(reg.terminal_id, ident)
        + bytes([reg.plate_color])
        + reg.plate.encode("gbk")
    )


@dataclass(slots=True)
class RegisterReply:
    reply_serial: int
    result: int
    auth_code: str


def encode_register_reply(reply_serial: int, result: int, auth_code: str = "") -> bytes:
    body = struct.pack("!HB", reply_serial, result)
    return body + (auth_code.encode("gbk") if result == REGISTERED else b"")


def decode_register_reply(body: bytes) -> RegisterReply | Problem:
    if len(body) < 3:
        return Problem(SHORT_BODY, "register reply shorter than 3 bytes", body)
    serial, result = struct.unpack_from("!HB", body)
    return RegisterReply(serial, result, _text(body[3:]))


@dataclass(slots=True)
class Authentication:
    auth_code: str
    imei: str = ""
    software_version: str = ""


def decode_authenticate(body: bytes, edition: int) -> Authentication | Problem:
    if edition == 2013:
        return Authentication(_text(body))
    if not body:
        return Problem(SHORT_BODY, "authentication without a code length", body)
    size = body[0]
    if len(body) < 1 + size + 15 + 20:
        return Problem(SHORT_BODY, f"authentication of {len(body)} bytes", body)
    code = _text(body[1 : 1 + size])
    imei = _text(body[1 + size : 16 + size])
    software = _text(body[16 + size : 36 + size])
    return Authentication(code, imei, software)


def encode_authenticate(auth: Authentication, edition: int) -> bytes:
    code = auth.auth_code.encode("gbk")
    if edition == 2013:
        return code
    return bytes([len(code)]) + code + _pad(auth.imei, 15) + _pad(auth.software_version, 20)


# --- general replies and retransmission ------------------------------------------------------

_REPLY = struct.Struct("!HHB")


@dataclass(slots=True)
class GeneralReply:
    reply_serial: int
    reply_id: int
    result: int


def encode_general_reply(reply_serial: int, reply_id: int, result: int) -> bytes:
    return _REPLY.pack(reply_serial & 0xFFFF, reply_id, result)


def decode_general_reply(body: bytes) -> GeneralReply | Problem:
    if len(body) < _REPLY.size:
        return Problem(SHORT_BODY, f"general reply of {len(body)} bytes < 5", body)
    return GeneralReply(*_REPLY.unpack_from(body))


@dataclass(slots=True)
class RetransmitRequest:
    original_serial: int
    indices: list[int]


def encode_retransmit(original_serial: int, indices: list[int], edition: int) -> bytes:
    count = struct.pack("!B", len(indices)) if edition == 2013 else struct.pack("!H", len(indices))
    return (
        struct.pack("!H", original_serial & 0xFFFF)
        + count
        + struct.pack(f"!{len(indices)}H", *indices)
    )


def decode_retransmit(body: bytes, edition: int) -> RetransmitRequest | Problem:
    head = 3 if edition == 2013 else 4
    if len(body) < head:
        return Problem(SHORT_BODY, "retransmission request cut short", body)
    serial = struct.unpack_from("!H", body)[0]
    count = body[2] if edition == 2013 else struct.unpack_from("!H", body, 2)[0]
    if len(body) != head + 2 * count:
        return Problem(BAD_FIELD, f"{count} indices do not fill {len(body)} bytes", body)
    return RetransmitRequest(serial, list(struct.unpack_from(f"!{count}H", body, head)))
