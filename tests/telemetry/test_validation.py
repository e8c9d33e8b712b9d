"""Payload decoding and validation: every bad input gets its reason, never an exception."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telemetry.contract import Topics
from telemetry.validation import (
    Fix,
    Limits,
    Rejection,
    decode_sighting,
    decode_status,
    decode_telemetry,
    parse_time_ms,
)

NOW = 1_790_000_000_000
LIMITS = Limits(
    max_payload_bytes=4096,
    max_fixes_per_message=50,
    future_tolerance_ms=300_000,
    past_horizon_ms=7 * 86_400_000,
)


def good(**overrides) -> dict:
    body = {"ts": NOW - 1000, "lat": 22.55, "lon": 114.06, "speed": 32.5, "heading": 90}
    body.update(overrides)
    return body


def enc(obj) -> bytes:
    return msgspec.json.encode(obj)


BAD_INPUTS = [
    ("malformed_json", b'{"ts": 1, "lat": '),
    ("malformed_json", b'{"ts": 1, "lat": NaN, "lon": 1, "speed": 1}'),
    ("malformed_json", b"\xff\xfe"),
    ("missing_field", enc({"ts": NOW, "lat": 22.5, "speed": 1})),
    ("invalid_field", enc(good(lat="22.5"))),
    ("invalid_field", enc(good(lid="ajar"))),
    ("invalid_field", enc(good(alarms=["Antenna Cut!"]))),
    ("invalid_field", b"42"),
    ("not_finite", b'{"ts": 1, "lat": 1e999, "lon": 1, "speed": 1}'),
    ("out_of_range", enc(good(lat=91.0))),
    ("out_of_range", enc(good(lon=-181.0))),
    ("out_of_range", enc(good(speed=-3))),
    ("out_of_range", enc(good(heading=400))),
    ("zero_position", enc(good(lat=0.0, lon=0.0))),
    ("bad_timestamp", enc(good(ts="2026-11-23T08:00:00"))),
    ("bad_timestamp", enc(good(ts="yesterday"))),
    ("future_time", enc(good(ts=NOW + 3_600_000))),
    ("too_old", enc(good(ts=NOW - 30 * 86_400_000))),
    ("too_old", enc(good(ts=(NOW // 1000)))),  # epoch seconds sent by mistake
    ("topic_mismatch", enc(good(device="OTHER"))),
    ("oversized", enc(good(pad="x" * 5000))),
    ("empty_batch", b"[]"),
    ("too_many_fixes", enc([{"ts": NOW - i, "lat": 1, "lon": 1, "speed": 1} for i in range(60)])),
]


@pytest.mark.parametrize(("reason", "payload"), BAD_INPUTS)
def test_bad_input_is_rejected_with_its_reason(reason, payload):
    fixes, rejections = decode_telemetry("DEV1", payload, NOW, LIMITS)
    assert fixes == []
    assert [r.reason for r in rejections] == [reason]
    assert rejections[0].detail


def test_good_fix_decodes_every_field():
    body = good(
        alt=12.5,
        lid="open",
        lift="up",
        load="full",
        weight_kg=31000,
        acc=True,
        alarms=["antenna_cut"],
        sats=12,
        hdop=0.9,
        seq=77,
        device="DEV1",
        unknown_field=1,
    )
    fixes, rejections = decode_telemetry("DEV1", enc(body), NOW, LIMITS)
    assert rejections == []
    (f,) = fixes
    assert (f.device_id, f.fix_ms, f.lat, f.lon, f.speed, f.heading) == (
        "DEV1",
        NOW - 1000,
        22.55,
        114.06,
        32.5,
        90,
    )
    assert (f.lid, f.lift, f.load, f.weight_kg, f.acc) == ("open", "up", "full", 31000, True)
    assert (f.alarms, f.sats, f.hdop, f.seq, f.alt) == (["antenna_cut"], 12, 0.9, 77, 12.5)


def test_iso_time_with_offset_is_converted_to_utc():
    assert parse_time_ms("2026-11-23T08:00:00+08:00") == parse_time_ms("2026-11-23T00:00:00Z")
    assert parse_time_ms(1_790_000_000_000.0) == 1_790_000_000_000


def test_batch_keeps_good_fixes_and_rejects_bad_ones_individually():
    payload = enc([good(ts=NOW - 3000), good(lat=95.0), good(ts=NOW - 1000), {"ts": "x"}, 7])
    fixes, rejections = decode_telemetry("DEV1", payload, NOW, LIMITS)
    assert [f.fix_ms for f in fixes] == [NOW - 3000, NOW - 1000]
    assert sorted(r.reason for r in rejections) == [
        "invalid_field",
        "missing_field",
        "out_of_range",
    ]
    # Each rejection carries its own element, not the whole batch.
    assert all(len(r.raw) < len(payload) for r in rejections)


def test_clean_batch_carries_per_fix_raw_json():
    fixes, _ = decode_telemetry(
        "DEV1", enc([good(ts=NOW - 2000), good(ts=NOW - 1000)]), NOW, LIMITS
    )
    assert [msgspec.json.decode(f.raw)["ts"] for f in fixes] == [NOW - 2000, NOW - 1000]


def test_sighting_and_status_decoding():
    s = decode_sighting(
        "CAM1", enc({"ts": NOW, "plate": "粤b 12345", "direction": "in"}), NOW, LIMITS
    )
    assert not isinstance(s, Rejection)
    assert s.plate == "粤B12345"
    assert (
        decode_sighting("CAM1", enc({"ts": NOW, "plate": "x"}), NOW, LIMITS).reason
        == "invalid_field"
    )
    assert decode_sighting("CAM1", b"{", NOW, LIMITS).reason == "malformed_json"
    bad_conf = decode_sighting(
        "CAM1", enc({"ts": NOW, "plate": "粤B12345", "confidence": 7}), NOW, LIMITS
    )
    assert bad_conf.reason == "out_of_range"
    assert decode_status(b"offline", NOW) == ("offline", NOW, False)
    assert decode_status(enc({"status": "online", "ts": NOW - 5}), NOW) == (
        "online",
        NOW - 5,
        False,
    )
    assert decode_status(enc({"status": "offline"}), NOW) == ("offline", NOW, False)
    # Orderly: the terminal's own offline, with its time and a shutdown reason; a will is not.
    orderly = {"status": "offline", "ts": NOW - 5, "reason": "shutdown"}
    assert decode_status(enc(orderly), NOW) == ("offline", NOW - 5, True)
    assert decode_status(enc({**orderly, "reason": "lost"}), NOW).orderly is False
    assert decode_status(b"sleeping", NOW).reason == "malformed_json"


def test_topics_parse_only_the_contract():
    topics = Topics("muck/v1")
    assert topics.parse("muck/v1/trucks/DEV-1/telemetry") == ("telemetry", "DEV-1")
    assert topics.parse("muck/v1/checkpoints/CAM9/sightings") == ("sightings", "CAM9")
    assert topics.parse("muck/v1/trucks/DEV 1/telemetry") is None
    assert topics.parse("muck/v1/trucks/DEV1/secret") is None
    assert topics.parse("other/v1/trucks/DEV1/telemetry") is None


REASONS = {
    "oversized",
    "malformed_json",
    "missing_field",
    "invalid_field",
    "not_finite",
    "out_of_range",
    "zero_position",
    "bad_timestamp",
    "future_time",
    "too_old",
    "topic_mismatch",
    "empty_batch",
    "too_many_fixes",
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=12,
)
fix_like = st.fixed_dictionaries(
    {
        "ts": st.one_of(st.integers(), st.floats(), st.text(max_size=30), st.just(NOW)),
        "lat": st.one_of(st.floats(), st.integers(), st.text(max_size=3)),
        "lon": st.one_of(st.floats(), st.integers()),
        "speed": st.one_of(st.floats(), st.integers(), st.none()),
    },
    optional={
        "heading": st.floats(),
        "lid": st.text(max_size=6),
        "alarms": st.lists(st.text(max_size=5)),
        "seq": st.integers(),
        "sats": st.integers(),
        "device": st.text(max_size=5),
    },
)


def _check_outcome(fixes, rejections):
    for f in fixes:
        assert isinstance(f, Fix)
        assert math.isfinite(f.lat) and math.isfinite(f.lon) and math.isfinite(f.speed)
        assert -90 <= f.lat <= 90 and -180 <= f.lon <= 180
    for r in rejections:
        assert r.reason in REASONS


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_yield_fixes_or_reasons(payload):
    _check_outcome(*decode_telemetry("DEV1", payload, NOW, LIMITS))


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, fix_like, st.lists(fix_like, max_size=5)))
def test_any_json_yields_fixes_or_reasons(value):
    fixes, rejections = decode_telemetry("DEV1", msgspec.json.encode(value), NOW, LIMITS)
    _check_outcome(fixes, rejections)
    assert fixes or rejections
