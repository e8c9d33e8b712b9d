"""JT/T 808 frames built by hand (struct and the escaping rules written out here, not the
codec's encoder), decoded by the gateway's codec: every message id in both editions,
escapes inside every field, bad frames with their reason codes, sub-packages out of order,
and property-based round trips."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.jt808 import messages as m
from telemetry.jt808.frames import (
    Frame,
    FrameSplitter,
    Problem,
    canonical_phone,
    decode_frame,
    encode_frame,
    split_message,
)
from telemetry.jt808.mapping import FixMapping, MappingError, alarm_names, compile_source
from telemetry.jt808.reassembly import Reassembler

PHONE_2013 = "013912345678"
PHONE_2019 = "00000000013912345678"
# 2026-11-23 16:00:05 in GMT+8 = 08:00:05 UTC
BCD_TIME = bytes.fromhex("261123160005")
FIX_MS = 1795420805000


def xor(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def hand_escape(data: bytes) -> bytes:
    out = bytearray()
    for b in data:
        if b == 0x7E:
            out += b"\x7d\x02"
        elif b == 0x7D:
            out += b"\x7d\x01"
        else:
            out.append(b)
    return bytes(out)


def hand_frame(
    msg_id: int,
    body: bytes,
    edition: int = 2013,
    serial: int = 7,
    package: tuple[int, int] | None = None,
    phone: str | None = None,
) -> bytes:
    props = len(body) | (0x2000 if package else 0)
    if edition == 2013:
        header = struct.pack("!HH", msg_id, props) + bytes.fromhex(phone or PHONE_2013)
    else:
        header = struct.pack("!HHB", msg_id, props | 0x4000, 1) + bytes.fromhex(phone or PHONE_2019)
    header += struct.pack("!H", serial)
    if package:
        header += struct.pack("!HH", *package)
    content = header + body
    return b"\x7e" + hand_escape(content + bytes([xor(content)])) + b"\x7e"


def location_body(
    alarm: int = 0,
    status: int = 0x03,
    lat: int = 22543101,
    lon: int = 114057868,
    items: bytes = b"",
) -> bytes:
    return struct.pack("!IIIIHHH", alarm, status, lat, lon, 14, 385, 92) + BCD_TIME + items


def one(stream: bytes) -> Frame | Problem:
    frames, problems = FrameSplitter().feed(stream)
    assert not problems
    assert len(frames) == 1
    return decode_frame(frames[0])


@pytest.mark.parametrize("edition", [2013, 2019])
def test_location_report_both_editions(edition):
    items = (
        b"\x01\x04"
        + struct.pack("!I", 12345)  # mileage 1234.5 km
        + b"\x02\x02"
        + struct.pack("!H", 800)  # fuel 80.0 l
        + b"\x03\x02"
        + struct.pack("!H", 390)  # recorder speed
        + b"\x25\x04"
        + struct.pack("!I", 0x10)
        + b"\x2a\x02"
        + struct.pack("!H", 0x0001)
        + b"\x30\x01\x1f"
        + b"\x31\x01\x0c"
        + b"\xee\x03abc"  # unknown: kept raw
    )
    frame = one(hand_frame(m.LOCATION, location_body(items=items), edition))
    assert isinstance(frame, Frame)
    assert frame.edition == edition
    assert canonical_phone(frame.phone) == PHONE_2013
    loc = m.decode_location(frame.body)
    assert isinstance(loc, m.Location)
    assert (loc.lat, loc.lon, loc.speed_kmh, loc.heading, loc.alt_m) == (
        22.543101,
        114.057868,
        38.5,
        92,
        14,
    )
    assert loc.fix_ms == FIX_MS
    known, unknown = m.read_items(loc.items)
    assert known == {
        "mileage_km": 1234.5,
        "fuel_l": 80.0,
        "recorder_speed_kmh": 39.0,
        "signal_status": 0x10,
        "io_status": 1,
        "signal_strength": 31,
        "sats": 12,
    }
    assert unknown == {0xEE: b"abc"}
    fix = FixMapping.from_settings({"profile": "default"}).fix(loc)
    assert fix["ts"] == FIX_MS and fix["acc"] is True and fix["sats"] == 12
    assert fix["jt808_items"] == {"ee": "616263"}


def test_south_west_and_negative_altitude():
    body = struct.pack("!IIIIHHH", 0, 0x03 | 0x04 | 0x08, 33868800, 151209300, 0xFFF6, 0, 0)
    loc = m.decode_location(body + BCD_TIME)
    assert (loc.lat, loc.lon, loc.alt_m) == (-33.8688, -151.2093, -10)


@pytest.mark.parametrize("edition", [2013, 2019])
def test_escapes_inside_every_field(edition):
    # 0x7E and 0x7D in the message id's neighbours, the serial, alarm, status, latitude,
    # longitude, altitude, speed, direction and an item: all must come back intact.
    body = (
        struct.pack(
            "!IIIIHHH", 0x7E7D7E7D, 0x7D000003, 0x017E7D7E, 0x067D7E7D, 0x7E7D, 0x7D7E, 0x7D
        )
        + BCD_TIME
        + b"\x7e\x02\x7d\x7e"
    )
    wire = hand_frame(m.LOCATION, body, edition, serial=0x7E7D)
    assert wire.count(b"\x7e") == 2  # only the flags survive escaping
    frame = one(wire)
    assert isinstance(frame, Frame)
    assert frame.serial == 0x7E7D
    assert frame.body == body
    loc = m.decode_location(frame.body)
    assert loc.alarm == 0x7E7D7E7D and loc.items == {0x7E: b"\x7d\x7e"}
    # and the codec's own encoder escapes the same way
    assert encode_frame(m.LOCATION, frame.phone, 0x7E7D, body, version=frame.version) == wire


@pytest.mark.parametrize("edition", [2013, 2019])
def test_register_authenticate_heartbeat_logout(edition):
    widths = {2013: (5, 20, 7), 2019: (11, 30, 30)}[edition]
    reg_body = (
        struct.pack("!HH", 44, 300)
        + b"ACME".ljust(widths[0], b"\x00")
        + b"MT-808".ljust(widths[1], b"\x00")
        + b"T000042".ljust(widths[2], b"\x00")
        + b"\x02"
        + "粤B12345".encode("gbk")
    )
    reg = m.decode_register(one(hand_frame(m.REGISTER, reg_body, edition)).body, edition)
    assert (reg.province, reg.city, reg.manufacturer, reg.model, reg.terminal_id) == (
        44,
        300,
        "ACME",
        "MT-808",
        "T000042",
    )
    assert reg.plate == "粤B12345" and reg.plate_color == 2
    assert m.encode_register(reg, edition) == reg_body

    if edition == 2013:
        auth_body = b"a1b2c3"
    else:
        auth_body = b"\x06a1b2c3" + b"861234567890123" + b"SW1.0".ljust(20, b"\x00")
    auth = m.decode_authenticate(one(hand_frame(m.AUTHENTICATE, auth_body, edition)).body, edition)
    assert auth.auth_code == "a1b2c3"
    if edition == 2019:
        assert auth.imei == "861234567890123" and auth.software_version == "SW1.0"

    for msg_id in (m.HEARTBEAT, m.LOGOUT):
        frame = one(hand_frame(msg_id, b"", edition))
        assert (frame.msg_id, frame.body) == (msg_id, b"")


@pytest.mark.parametrize("edition", [2013, 2019])
def test_replies_and_retransmission(edition):
    # 0x0001 terminal general reply
    reply = m.decode_general_reply(
        one(hand_frame(m.TERMINAL_REPLY, struct.pack("!HHB", 9, 0x8201, 0), edition)).body
    )
    assert (reply.reply_serial, reply.reply_id, reply.result) == (9, 0x8201, 0)
    # 0x8001 platform general reply, as the gateway builds it
    version = None if edition == 2013 else 1
    wire = encode_frame(
        m.PLATFORM_REPLY,
        PHONE_2013 if edition == 2013 else PHONE_2019,
        3,
        m.encode_general_reply(7, m.LOCATION, m.OK),
        version=version,
    )
    assert wire == hand_frame(
        m.PLATFORM_REPLY, struct.pack("!HHB", 7, 0x0200, 0), edition, serial=3
    )
    # 0x8100 register reply with an auth code; failure carries none
    assert m.encode_register_reply(5, m.REGISTERED, "abc") == b"\x00\x05\x00abc"
    assert m.encode_register_reply(5, m.NO_SUCH_TERMINAL, "abc") == b"\x00\x05\x04"
    assert m.decode_register_reply(b"\x00\x05\x00abc").auth_code == "abc"
    # 0x8003: the count is a BYTE in 2013, a WORD in 2019
    body = m.encode_retransmit(100, [2, 3], edition)
    expected = b"\x00\x64" + (b"\x02" if edition == 2013 else b"\x00\x02") + b"\x00\x02\x00\x03"
    assert body == expected
    assert m.decode_retransmit(body, edition).indices == [2, 3]
    # 0x0201 reply to a position query
    qr = m.decode_query_reply(
        one(hand_frame(m.QUERY_REPLY, b"\x00\x2a" + location_body(), edition)).body
    )
    assert qr.reply_serial == 42 and qr.location.fix_ms == FIX_MS


@pytest.mark.parametrize("edition", [2013, 2019])
@pytest.mark.parametrize("kind", [m.BATCH_NORMAL, m.BATCH_BLIND_AREA])
def test_batch_upload(edition, kind):
    reports = [location_body(lat=22500000 + k) for k in range(3)]
    body = struct.pack("!HB", 3, kind) + b"".join(struct.pack("!H", len(r)) + r for r in reports)
    batch = m.decode_batch(one(hand_frame(m.BATCH, body, edition)).body)
    assert batch.kind == kind
    assert [loc.lat for loc in batch.locations] == [22.5, 22.500001, 22.500002]
    assert m.encode_batch(batch.locations, kind) == body


def test_bad_frames_have_reasons():
    good = hand_frame(m.LOCATION, location_body())
    bad_check = good[:-2] + bytes([good[-2] ^ 0x55]) + b"\x7e"
    assert one(bad_check).reason == "jt808_bad_checksum"
    bad_escape = good[:5] + b"\x7d\x05" + good[5:]
    assert one(bad_escape).reason == "jt808_bad_escape"
    assert one(b"\x7e\x02\x00\x00\x7e").reason == "jt808_truncated"
    # header claims 30 bytes but the body is 28 / 40
    body = location_body()
    content = struct.pack("!HH", 0x0200, 30) + bytes.fromhex(PHONE_2013) + b"\x00\x01" + body
    assert (
        one(b"\x7e" + hand_escape(content + bytes([xor(content)])) + b"\x7e").reason
        == "jt808_truncated"
    )
    content = struct.pack("!HH", 0x0200, 20) + bytes.fromhex(PHONE_2013) + b"\x00\x01" + body
    assert (
        one(b"\x7e" + hand_escape(content + bytes([xor(content)])) + b"\x7e").reason
        == "jt808_bad_length"
    )
    # an impossible date (30 February) and a body shorter than a location
    feb30 = struct.pack("!IIIIHHH", 0, 3, 1, 1, 0, 0, 0) + bytes.fromhex("260230120000")
    assert m.decode_location(feb30).reason == "jt808_bad_time"
    assert m.decode_location(b"\x00" * 27).reason == "jt808_short_body"
    assert m.decode_location(location_body(items=b"\x01\x04\x00")).reason == "jt808_short_body"
    assert m.decode_batch(b"\x00\x02\x01\x00\x1c" + location_body()).reason == "jt808_short_body"
    assert m.decode_batch(b"\x00\x00\x07").reason == "jt808_bad_field"
    assert m.decode_register(b"\x00" * 10, 2013).reason == "jt808_short_body"
    assert m.decode_authenticate(b"\x05ab", 2019).reason == "jt808_short_body"


def test_splitter_resynchronises_after_garbage():
    good = hand_frame(m.HEARTBEAT, b"")
    splitter = FrameSplitter(max_frame_bytes=64)
    frames, problems = splitter.feed(b"junk" + good + b"xx\x7e" + good[:4])
    assert [p.reason for p in problems] == ["jt808_garbage"]
    # "xx" between two frames is a candidate frame (it fails its checks later)
    assert len(frames) == 2 and frames[1] == b"xx"
    frames, problems = splitter.feed(good[4:] + good)  # a frame split across reads
    assert [decode_frame(f).msg_id for f in frames] == [m.HEARTBEAT, m.HEARTBEAT]
    frames, problems = splitter.feed(b"\x7e" + b"z" * 100)
    assert [p.reason for p in problems] == ["jt808_oversized"] and not frames
    frames, problems = splitter.feed(b"zz" + good)  # the rest of the long stretch is skipped
    assert len(frames) == 1 and decode_frame(frames[0]).msg_id == m.HEARTBEAT
    # a shared flag between consecutive frames
    frames, _ = FrameSplitter().feed(good + good[1:])
    assert len(frames) == 2


@pytest.mark.parametrize("edition", [2013, 2019])
def test_subpackages_out_of_order(edition):
    reports = [location_body(lat=22500000 + k) for k in range(40)]
    body = struct.pack("!HB", 40, 1) + b"".join(struct.pack("!H", len(r)) + r for r in reports)
    parts = [body[i : i + 500] for i in range(0, len(body), 500)]
    total = len(parts)
    wire = [
        hand_frame(m.BATCH, part, edition, serial=200 + k, package=(total, k + 1))
        for k, part in enumerate(parts)
    ]
    assert total == 3
    assembler = Reassembler(timeout_s=5)
    results = []
    for k in (2, 0, 1):
        frame = one(wire[k])
        assert (frame.total, frame.index) == (3, k + 1)
        results.append(assembler.add(frame, now=0.0))
    assert results[:2] == [None, None]
    whole = results[2]
    assert whole.serial == 200 and whole.total == 0 and whole.body == body
    assert len(m.decode_batch(whole.body).locations) == 40
    # the codec's splitter makes the same frames
    version = None if edition == 2013 else 1
    phone = PHONE_2013 if edition == 2013 else PHONE_2019
    assert split_message(m.BATCH, phone, 200, body, version=version, package_size=500) == wire


def test_missing_subpackage_is_asked_for_then_quarantined():
    wire = [hand_frame(m.BATCH, b"x" * 10, serial=50 + k, package=(3, k + 1)) for k in range(3)]
    assembler = Reassembler(timeout_s=5)
    assembler.add(one(wire[0]), now=0.0)
    assembler.add(one(wire[2]), now=1.0)
    assert assembler.expire(3.0) == ([], [])
    ask, dropped = assembler.expire(6.5)
    assert [(a.first_serial, a.indices) for a in ask] == [(50, [2])] and not dropped
    ask, dropped = assembler.expire(12.0)
    assert not ask and [p.reason for p in dropped] == ["jt808_subpackage_timeout"]
    assert len(assembler) == 0
    # a late retransmission would have completed it
    assembler.add(one(wire[0]), 20.0)
    assembler.add(one(wire[2]), 20.0)
    assembler.expire(26.0)
    assert assembler.add(one(wire[1]), 27.0).body == b"x" * 30


def test_subpackage_memory_is_bounded():
    assembler = Reassembler(timeout_s=5, max_bytes=25)
    frames = [one(hand_frame(m.BATCH, b"x" * 10, serial=k * 10, package=(2, 1))) for k in range(3)]
    assert assembler.add(frames[0], 0) is None and assembler.add(frames[1], 0) is None
    assert assembler.add(frames[2], 0).reason == "jt808_subpackage_overflow"


def test_alarm_bits_and_profiles():
    assert alarm_names(1 << 5 | 1 << 6 | 1 << 8 | 1 << 4) == [
        "gnss_fault",
        "antenna_cut",
        "power_cut",
    ]
    assert alarm_names(1 << 16) == ["alarm_bit_16"]
    loaded = 0x03 | 0x300 | 0x8000 | 0x20000
    e1 = b"\xe1\x01\x03" + b"\xe2\x04" + struct.pack("!I", 31200)
    f3 = b"\xf3\x05\x01\x00\x02" + struct.pack("!H", 3120)
    loc_default = m.decode_location(location_body(status=loaded, items=e1))
    loc_f3 = m.decode_location(location_body(status=0x03, items=f3))
    default = FixMapping.from_settings({"profile": "default"})
    assert {k: default.fix(loc_default)[k] for k in ("lid", "lift", "load", "weight_kg")} == {
        "lid": "open",
        "lift": "up",
        "load": "full",
        "weight_kg": 31200.0,
    }
    doors = FixMapping.from_settings({"profile": "door_bits"}).fix(loc_default)
    assert (doors["lid"], doors["lift"], doors["load"], "weight_kg" in doors) == (
        "open",
        "up",
        "full",
        False,
    )
    vendor = FixMapping.from_settings({"profile": "vendor_f3"}).fix(loc_f3)
    assert (vendor["lid"], vendor["lift"], vendor["load"], vendor["weight_kg"]) == (
        "open",
        "down",
        "full",
        31200.0,
    )
    # a per-field override, and a report without the item: the field is left out
    override = FixMapping.from_settings(
        {"profile": "default", "lid": "status & 0x1000: 0=open, 1=closed"}
    )
    assert override.fix(loc_default)["lid"] == "open"
    assert "lift" not in default.fix(loc_f3)
    # half load is 01 in bits 8-9; 10 is reserved and names nothing
    assert default.fix(m.decode_location(location_body(status=0x103)))["load"] == "half"
    assert "load" not in default.fix(m.decode_location(location_body(status=0x203)))


@pytest.mark.parametrize(
    "text",
    ["status & 0x300", "item 0x1FF & 1: 0=open", "lid: 0=open", "status: 0=ajar", "item 0xE1 * x"],
)
def test_bad_mapping_is_refused_with_the_field_name(text):
    with pytest.raises(MappingError, match="jt808.lid"):
        compile_source("lid", text)
    with pytest.raises(MappingError, match="jt808.profile"):
        FixMapping.from_settings({"profile": "nowhere"})


locations = st.builds(
    m.Location,
    alarm=st.integers(0, 2**32 - 1),
    status=st.integers(0, 2**32 - 1),
    lat=st.integers(-90_000_000, 90_000_000).map(lambda v: v / 1e6),
    lon=st.integers(-180_000_000, 180_000_000).map(lambda v: v / 1e6),
    alt_m=st.integers(-32768, 32767),
    speed_kmh=st.integers(0, 65535).map(lambda v: v / 10),
    heading=st.integers(0, 359),
    fix_ms=st.integers(946_684_800, 4_102_444_799).map(lambda s: s * 1000 - 8 * 3600_000),
    items=st.dictionaries(st.integers(0, 255), st.binary(max_size=20), max_size=5),
)


@settings(max_examples=300, deadline=None)
@given(locations, st.sampled_from([None, 1]), st.integers(0, 65535))
def test_round_trip_location(loc, version, serial):
    phone = PHONE_2013 if version is None else PHONE_2019
    wire = encode_frame(m.LOCATION, phone, serial, m.encode_location(loc), version=version)
    frame = one(wire)
    back = m.decode_location(frame.body)
    assert isinstance(back, m.Location)
    assert (frame.serial, frame.version) == (serial, version)
    # the sign of a zero coordinate is not representable; everything else is
    assert (abs(back.lat), abs(back.lon)) == (abs(loc.lat), abs(loc.lon))
    assert (back.alarm, back.alt_m, back.speed_kmh, back.heading, back.fix_ms, back.items) == (
        loc.alarm,
        loc.alt_m,
        loc.speed_kmh,
        loc.heading,
        loc.fix_ms,
        loc.items,
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(locations, min_size=1, max_size=30), st.sampled_from([None, 1]), st.randoms())
def test_round_trip_subpackaged_batch(locs, version, rnd):
    body = m.encode_batch(locs)
    wire = split_message(m.BATCH, PHONE_2013, 10, body, version=version, package_size=200)
    rnd.shuffle(wire)
    assembler = Reassembler()
    results = [assembler.add(one(w), 0.0) for w in wire]
    whole = [r for r in results if r is not None]
    assert len(whole) == 1 and whole[0].body == body
    assert len(m.decode_batch(whole[0].body).locations) == len(locs)


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8))
def test_any_byte_stream_gives_frames_or_reasons(chunks):
    splitter = FrameSplitter(max_frame_bytes=128)
    for chunk in chunks:
        frames, problems = splitter.feed(chunk)
        assert all(isinstance(p.reason, str) for p in problems)
        for raw in frames:
            frame = decode_frame(raw)
            if isinstance(frame, Problem):
                assert frame.reason.startswith("jt808_")
                continue
            for decode in (
                m.decode_location,
                m.decode_batch,
                m.decode_query_reply,
                m.decode_general_reply,
                m.decode_register_reply,
            ):
                decode(frame.body)
            for edition in (2013, 2019):
                m.decode_register(frame.body, edition)
                m.decode_authenticate(frame.body, edition)
                m.decode_retransmit(frame.body, edition)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=60), st.integers(0, 0xFFFF), st.sampled_from([None, 1]))
def test_random_bodies_survive_the_wire(body, msg_id, version):
    wire = encode_frame(msg_id, "1", 1, body, version=version)
    frame = one(wire)
    assert (frame.msg_id, frame.body) == (msg_id, body)
    # and a flipped byte anywhere is caught, never raised
    for k in range(1, len(wire) - 1):
        damaged = wire[:k] + bytes([wire[k] ^ 0x01]) + wire[k + 1 :]
        frames, _ = FrameSplitter().feed(damaged)
        for raw in frames:
            result = decode_frame(raw)
            assert isinstance(result, Problem | Frame)
