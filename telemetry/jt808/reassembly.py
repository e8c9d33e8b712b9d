"""Sub-packaged messages (header bit 13): packages 1..total, in any order, joined into one.

A terminal numbers the packages of one message with consecutive serials, so the message is
known by (message id, total, serial of package 1 = serial - index + 1). When packages are
missing `timeout_s` after the last one arrived, the gateway asks for them once with 0x8003
(the retransmission request); if they are still missing after another `timeout_s`, the
packages held are dropped and quarantined (`jt808_subpackage_timeout`). The bytes held per
connection are bounded, so a terminal cannot make the gateway hoard memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from telemetry.jt808.frames import Frame, Problem

SUBPACKAGE_TIMEOUT = "jt808_subpackage_timeout"
SUBPACKAGE_OVERFLOW = "jt808_subpackage_overflow"


@dataclass
class _Pending:
    first: Frame
    parts: dict[int, bytes] = field(default_factory=dict)
    deadline: float = 0.0
    asked: bool = False

    def size(self) -> int:
        return sum(len(p) for p in self.parts.values())


@dataclass(slots=True)
class Missing:
    """Packages to ask for again (0x8003)."""

    msg_id: int
    first_serial: int
    indices: list[int]
    version: int | None


class Reassembler:
    def __init__(self, timeout_s: float = 30.0, max_bytes: int = 256 * 1024) -> None:
        self.timeout_s = timeout_s
        self.max_bytes = max_bytes
        self._pending: dict[tuple[int, int, int], _Pending] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, frame: Frame, now: float) -> Frame | Problem | None:
        """A complete message (total 0), a Problem, or None while packages are missing."""
        first_serial = (frame.serial - frame.index + 1) & 0xFFFF
        key = (frame.msg_id, frame.total, first_serial)
        pending = self._pending.get(key)
        if pending is None:
            held = sum(p.size() for p in self._pending.values())
            if held + len(frame.body) > self.max_bytes:
                return Problem(
                    SUBPACKAGE_OVERFLOW,
                    f"more than {self.max_bytes} bytes of unfinished sub-packages",
                    frame.body[:256],
                    frame.phone,
                )
            pending = self._pending[key] = _Pending(frame)
        pending.parts[frame.index] = frame.body  # a re-sent package replaces its copy
        pending.deadline = now + self.timeout_s
        if len(pending.parts) < frame.total:
            return None
        del self._pending[key]
        first = pending.first
        body = b"".join(pending.parts[i] for i in range(1, frame.total + 1))
        return Frame(frame.msg_id, first.phone, first_serial, body, first.version, first.encryption)

    def expire(self, now: float) -> tuple[list[Missing], list[Problem]]:
        """Messages overdue: first ask for their missing packages, then drop them."""
        ask: list[Missing] = []
        dropped: list[Problem] = []
        for key, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            msg_id, total, first_serial = key
            missing = [i for i in range(1, total + 1) if i not in pending.parts]
            if not pending.asked:
                pending.asked = True
                pending.deadline = now + self.timeout_s
                ask.append(Missing(msg_id, first_serial, missing, pending.first.version))
                continue
            del self._pending[key]
            raw = b"".join(pending.parts[i] for i in sorted(pending.parts))
            dropped.append(
                Problem(
                    SUBPACKAGE_TIMEOUT,
                    f"message 0x{msg_id:04x} serial {first_serial}: packages {missing[:20]} "
                    f"of {total} never arrived",
                    raw[:256],
                    pending.first.phone,
                )
            )
        return ask, dropped
