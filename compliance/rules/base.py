"""What a rule is: named condition streams over a frame, plus thresholds from the rule table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from compliance.frame import FixFrame


@dataclass
class Carried:
    """Per-truck values from before the batch (one slot per truck of the frame)."""

    last_t: np.ndarray  # epoch s of the last fix processed, -inf if none
    last_loaded: np.ndarray  # bool
    last_operating: np.ndarray  # bool: ignition on, moving or loaded at the last fix
    on_route: np.ndarray  # bool: inside the route corridor (hysteresis state)


@dataclass
class Stream:
    """One condition of a rule; episodes of it become violations of the rule's kind."""

    name: str
    cond: np.ndarray
    value: np.ndarray
    min_duration_s: float
    #: a run qualifies at once when its worst value reaches this (see compliance.runs)
    qualify_value: float = float("inf")
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class PointEpisodes:
    """Episodes a rule finds directly (e.g. a gap between two fixes), not from a run."""

    fix: np.ndarray  # fix index where it is detected (its end)
    start_t: np.ndarray
    end_t: np.ndarray
    worst: np.ndarray
    #: episodes with an aggravating finding: always serious, with `Rule.flag_detail()`
    #: added to their recorded parameters
    flagged: np.ndarray | None = None


class Rule:
    kind: str = ""
    #: unit of the worst value ("" = the rule has no measure; no worst value is stored)
    unit: str = ""
    #: names of the condition streams, in a fixed order (they index the stored carry)
    stream_names: tuple[str, ...] = ()

    def __init__(self, spec: dict[str, Any], settings: Any) -> None:
        self.spec = spec
        self.points = int(spec.get("points", 0))
        self.legal_basis = str(spec.get("legal_basis", ""))
        self.min_duration_s = float(spec.get("min_duration_s", 0.0))

    def streams(self, frame: FixFrame, carried: Carried) -> list[Stream]:
        return []

    def point_episodes(self, frame: FixFrame, carried: Carried) -> PointEpisodes | None:
        return None

    def severity(self, duration_s: float, worst: float) -> str:
        return "minor"

    def flag_detail(self) -> dict[str, Any]:
        """What a flagged point episode records beside the thresholds (see PointEpisodes)."""
        return {}

    def parameters(self) -> dict[str, Any]:
        """Thresholds recorded with each violation (what the officer sees as "rule used")."""
        return {k: v for k, v in self.spec.items() if k != "legal_basis"}
