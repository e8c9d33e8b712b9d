"""JT/T 808 framing: the byte stream of a terminal → frames (header + body), and back.

A frame on the wire is `0x7E | escaped(header + body + check code) | 0x7E`, where escaping
replaces 0x7E by 0x7D 0x02 and 0x7D by 0x7D 0x01, and the check code is the XOR of every
header and body byte. The header is

    2013: id(2) properties(2) phone BCD(6)  serial(2) [total(2) index(2)]
    2019: id(2) properties(2) version(1) phone BCD(10) serial(2) [total(2) index(2)]

with properties bits 0-9 body length, 10-12 encryption, 13 sub-packaged, 14 the 2019 version
flag. The edition is read from that flag frame by frame, so one gateway serves both.

Nothing here raises on the terminal's bytes: a frame that cannot be used becomes a `Problem`
with a reason code (the quarantine's) and the raw bytes, and the stream goes on at the next
0x7E — the delimiter is what lets a stream resynchronise after garbage.
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass

FLAG = 0x7E
ESCAPE = 0x7D
_FLAG_BYTE = b"\x7e"

# Reason codes of frames put in quarantine (docs/jt808.md lists them).
BAD_CHECKSUM = "jt808_bad_checksum"
BAD_ESCAPE = "jt808_bad_escape"
TRUNCATED = "jt808_truncated"
BAD_LENGTH = "jt808_bad_length"
OVERSIZED = "jt808_oversized"
GARBAGE = "jt808_garbage"

_HEADER_2013 = struct.Struct("!HH6sH")
_HEADER_2019 = struct.Struct("!HHB10sH")
_PACKAGE = struct.Struct("!HH")
_BODY_LENGTH_MASK = 0x03FF
_ENCRYPTION_MASK = 0x1C00
_SUBPACKAGE_BIT = 0x2000
_VERSION_BIT = 0x4000


@dataclass(slots=True)
class Frame:
    """One decoded frame. `phone` is the BCD digits as sent (12 or 20 of them)."""

    msg_id: int
    phone: str
    serial: int
    body: bytes
    version: int | None = None  # None: 2013 edition; the 2019 header's protocol version
    encryption: int = 0
    total: int = 0  # sub-packages of the message, 0 when not split
    index: int = 0  # 1-based index of this sub-package

    @property
    def edition(self) -> int:
        return 2013 if self.version is None else 2019


@dataclass(slots=True)
class Problem:
    """A frame (or stretch of stream) that could not be used, for the quarantine."""

    reason: str
    detail: str
    raw: bytes  # the bytes as received (escaped), bounded by the caller
    phone: str | None = None


def bcd(raw: bytes) -> str:
    """BCD bytes → their digits ("" for nibbles that are not digits is left to callers)."""
    return raw.hex()


def to_bcd(digits: str, size: int) -> bytes:
    """Decimal digits → `size` BCD bytes, left-padded with zeros."""
    text = digits.rjust(size * 2, "0")
    if len(text) != size * 2 or not text.isdigit():
        raise ValueError(f"{digits!r} does not fit {size} BCD bytes")
    return bytes.fromhex(text)


@functools.lru_cache(maxsize=65536)
def _phone_bcd(phone: str, size: int) -> bytes:
    """A terminal's phone as header bytes: every reply to it repeats them."""
    return to_bcd(phone, size)


def canonical_phone(digits: str) -> str:
    """The terminal phone as one id for both editions: leading zeros dropped, then padded to
    the 2013 edition's 12 digits (a 2019 terminal's 20-digit phone of the same number maps
    to the same id)."""
    return digits.lstrip("0").rjust(12, "0")


def checksum(data: bytes) -> int:
    """XOR of all bytes. Folding the bytes as one integer onto itself (a few big-integer
    operations) is several times faster than a Python loop over a 60-byte report."""
    size = len(data)
    value = int.from_bytes(data, "big")
    while size > 1:
        low = (size + 1) // 2
        bits = 8 * low
        value = (value >> bits) ^ (value & ((1 << bits) - 1))
        size = low
    return value


def escape(data: bytes) -> bytes:
    return data.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02")


def unescape(data: bytes) -> bytes | None:
    """None when a 0x7D is followed by anything but 0x01 or 0x02 (or ends the frame)."""
    if b"\x7d" not in data:
        return data
    parts = data.split(b"\x7d")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if not part:
            return None
        lead = part[0]
        if lead == 0x01:
            out.append(0x7D)
        elif lead == 0x02:
            out.append(0x7E)
        else:
            return None
        out += part[1:]
    return bytes(out)


def encode_frame(
    msg_id: int,
    phone: str,
    serial: int,
    body: bytes,
    *,
    version: int | None = None,
    total: int = 0,
    index: int = 0,
    encryption: int = 0,
) -> bytes:
    """A complete frame on the wire (flags, escapes, check code). `version` None: 2013."""
    if len(body) > _BODY_LENGTH_MASK:
        raise ValueError(f"body of {len(body)} bytes exceeds 1023: split it into sub-packages")
    props = len(body) | (encryption << 10 & _ENCRYPTION_MASK)
    if total:
        props |= _SUBPACKAGE_BIT
    if version is None:
        header = _HEADER_2013.pack(msg_id, props, _phone_bcd(phone, 6), serial & 0xFFFF)
    else:
        props |= _VERSION_BIT
        header = _HEADER_2019.pack(
            msg_id, props, version & 0xFF, _phone_bcd(phone, 10), serial & 0xFFFF
        )
    if total:
        header += _PACKAGE.pack(total, index)
    content = header + body
    return _FLAG_BYTE + escape(content + bytes([checksum(content)])) + _FLAG_BYTE


def split_message(
    msg_id: int,
    phone: str,
    first_serial: int,
    body: bytes,
    *,
    version: int | None = None,
    package_size: int = 1023,
) -> list[bytes]:
    """A long body as sub-package frames with consecutive serials (index 1..total)."""
    chunks = [body[i : i + package_size] for i in range(0, len(body), package_size)] or [b""]
    total = len(chunks)
    return [
        encode_frame(
            msg_id, phone, first_serial + k, chunk, version=version, total=total, index=k + 1
        )
        for k, chunk in enumerate(chunks)
    ]


def decode_frame(escaped: bytes) -> Frame | Problem:
    """The content between two 0x7E flags → a Frame, or the Problem with it."""
    content = unescape(escaped)
    if content is None:
        return Problem(BAD_ESCAPE, "0x7D not followed by 0x01 or 0x02", escaped)
    if len(content) < _HEADER_2013.size + 1:
        return Problem(TRUNCATED, f"{len(content)} bytes, shorter than a header", escaped)
    data, check = content[:-1], content[-1]
    if checksum(data) != check:
        return Problem(BAD_CHECKSUM, f"check code 0x{check:02x} != 0x{checksum(data):02x}", escaped)
    msg_id, props = struct.unpack_from("!HH", data)
    if props & _VERSION_BIT:
        if len(data) < _HEADER_2019.size:
            return Problem(TRUNCATED, "shorter than a 2019 header", escaped)
        _, _, version, phone_raw, serial = _HEADER_2019.unpack_from(data)
        offset = _HEADER_2019.size
    else:
        version = None
        _, _, phone_raw, serial = _HEADER_2013.unpack_from(data)
        offset = _HEADER_2013.size
    phone = phone_raw.hex()
    if not phone.isdigit():
        return Problem(BAD_LENGTH, f"phone {phone!r} is not BCD", escaped)
    total = index = 0
    if props & _SUBPACKAGE_BIT:
        if len(data) < offset + _PACKAGE.size:
            return Problem(TRUNCATED, "sub-package header cut short", escaped, phone)
        total, index = _PACKAGE.unpack_from(data, offset)
        offset += _PACKAGE.size
        if not 1 <= index <= total:
            return Problem(BAD_LENGTH, f"sub-package {index} of {total}", escaped, phone)
    body = data[offset:]
    declared = props & _BODY_LENGTH_MASK
    if len(body) != declared:
        reason = TRUNCATED if len(body) < declared else BAD_LENGTH
        return Problem(reason, f"body of {len(body)} bytes, header says {declared}", escaped, phone)
    return Frame(
        msg_id,
        phone,
        serial,
        body,
        version,
        (props & _ENCRYPTION_MASK) >> 10,
        total,
        index,
    )


class FrameSplitter:
    """Cuts a TCP byte stream into escaped frame contents at the 0x7E flags.

    Every non-empty stretch between two flags is a candidate frame (so a terminal that shares
    one flag between consecutive frames is read too); bytes before the first flag are
    garbage. A stretch longer than `max_frame_bytes` without a flag cannot be a frame: it is
    reported once and skipped; `unsynchronised` tells the server when to give up.
    """

    def __init__(self, max_frame_bytes: int = 4096) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._pending = bytearray()
        self._synced = False
        self._skipping = False  # inside an oversized stretch, waiting for the next flag
        self.skipped_bytes = 0  # bytes discarded since the last good flag

    def feed(self, data: bytes) -> tuple[list[bytes], list[Problem]]:
        frames: list[bytes] = []
        problems: list[Problem] = []
        pending = self._pending
        pending += data
        start = 0
        while True:
            flag = pending.find(FLAG, start)
            if flag < 0:
                break
            stretch = bytes(pending[start:flag])
            if not self._synced:
                if stretch:
                    problems.append(
                        Problem(GARBAGE, f"{len(stretch)} bytes before a 0x7E", stretch)
                    )
                self._synced = True
            elif self._skipping:
                self._skipping = False
            elif stretch:
                frames.append(stretch)
            self.skipped_bytes = 0
            start = flag + 1
        del pending[:start]
        if len(pending) > self.max_frame_bytes:
            if not self._skipping:
                reason = OVERSIZED if self._synced else GARBAGE
                problems.append(
                    Problem(
                        reason,
                        f"over {self.max_frame_bytes} bytes without a 0x7E",
                        bytes(pending[:256]),
                    )
                )
            self.skipped_bytes += len(pending)
            self._skipping = self._synced
            pending.clear()
        return frames, problems


def peek_header(escaped: bytes) -> tuple[int, str, int, int | None] | None:
    """(message id, phone, serial, version) of a frame that failed its checks, if its header
    reads at all: enough to answer it with the "message error" result."""
    content = unescape(escaped)
    if content is None:
        content = escaped.replace(b"\x7d\x01", b"\x7d").replace(b"\x7d\x02", b"\x7e")
    try:
        msg_id, props = struct.unpack_from("!HH", content)
        if props & _VERSION_BIT:
            _, _, version, phone_raw, serial = _HEADER_2019.unpack_from(content)
        else:
            version = None
            _, _, phone_raw, serial = _HEADER_2013.unpack_from(content)
    except struct.error:
        return None
    phone = phone_raw.hex()
    return (msg_id, phone, serial, version) if phone.isdigit() else None
