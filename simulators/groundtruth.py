"""Ground truth of the simulator: every misbehaviour it injected, to score the rules against."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from compliance.violations import KINDS

# Scored beside the violation kinds: terminal alarms (going_dark violations of stream
# `terminal_alarm`), terminals reported offline (`device_status`, the MQTT last will), and the
# black-truck list (black_trucks), per plate and reason or per unregistered device.
TERMINAL_KINDS = ("terminal_alarm", "terminal_offline")
BLACK_KINDS = (
    "black_unregistered_device",
    "black_unregistered_plate",
    "black_no_valid_permit",
    "black_untracked",
)
SCORED_KINDS = KINDS + TERMINAL_KINDS + BLACK_KINDS


@dataclass
class TruthEvent:
    plate: str
    device_id: str
    kind: str  # one of SCORED_KINDS (compliance.violations.KINDS and the extras above)
    start_ms: int  # device time (simulated), epoch milliseconds UTC
    end_ms: int | None = None  # None while still going on
    detail: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in SCORED_KINDS:
            raise ValueError(f"unknown violation kind {self.kind!r}")

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["start"] = _iso(self.start_ms)
        body["end"] = _iso(self.end_ms) if self.end_ms is not None else None
        return body


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat()


def truth_document(events: list[TruthEvent], **meta: Any) -> dict[str, Any]:
    ordered = sorted(events, key=lambda e: (e.start_ms, e.device_id, e.kind))
    counts: dict[str, int] = {}
    for event in ordered:
        counts[event.kind] = counts.get(event.kind, 0) + 1
    return {"meta": meta, "counts": counts, "events": [e.as_json() for e in ordered]}


def write_truth(path: str | Path, events: list[TruthEvent], **meta: Any) -> None:
    Path(path).write_text(
        json.dumps(truth_document(events, **meta), ensure_ascii=False, indent=1), encoding="utf-8"
    )
