"""What a rule is: named condition streams over a frame, plus thresholds from the rule table,
and everything else the product needs to know about the rule (its kind, labels, settings
section, legal basis, carried state), declared on the class so that no other file repeats it.
See docs/adding-a-rule.md."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # only for the annotations: the declarations stay cheap to import
    from compliance.frame import FixFrame


@dataclass
class Carried:
    """Per-truck values from before the batch (one slot per truck of the frame)."""

    last_t: np.ndarray  # epoch s of the last fix processed, -inf if none
    last_loaded: np.ndarray  # bool
    last_working: np.ndarray  # bool: working at the last fix (compliance.frame.is_working)
    #: the rules' own carried columns (`Rule.keeps`), by name: bool arrays for columns with a
    #: bool default, float arrays otherwise
    kept: dict[str, np.ndarray] = field(default_factory=dict)


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
    #: episodes of the lowest severity, `notice` (not flagged ones)
    low: np.ndarray | None = None
    #: episodes an orderly shutdown reported by the terminal excuses (compliance.dark_excuses)
    excusable: np.ndarray | None = None


class Rule:
    #: the violation kind the rule raises (`violations.kind`); one rule per kind
    kind: ClassVar[str] = ""
    #: what the kind is called on the dashboard, its exports and the docs: {"zh": …, "en": …}
    label: ClassVar[Mapping[str, str]] = {}
    #: the rule's table in the settings, always "rules.<kind>" ([rules.<kind>] in
    #: core/defaults.toml; set from `kind`): min_duration_s, points, the legal-basis text, the
    #: rule's own thresholds
    section: ClassVar[str] = ""
    #: a short stable key of the legal provision the rule enforces ("<regulation>.art_<n>…"),
    #: under which the legal texts will be looked up (issue 14); listed in docs/compliance.md
    legal_basis_key: ClassVar[str] = ""
    #: unit of the worst value (left "" when the rule has no measure, like dumping, whose start,
    #: end and evidence tell it: no worst value is stored)
    unit: ClassVar[str] = ""
    #: names of the condition streams, in a fixed order (they index the stored carry)
    stream_names: ClassVar[tuple[str, ...]] = ()
    #: per-truck values the rule carries from one batch to the next, by name, each with its
    #: value for a truck not seen yet (a bool default makes a bool column); the rule reads them
    #: as `carried.kept[name]` and gives their new values in `end_of_batch`
    keeps: ClassVar[Mapping[str, bool | float]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.section = f"rules.{cls.kind}"

    def __init__(self, spec: dict[str, Any], settings: Any) -> None:
        self.spec = spec
        self.points = int(spec.get("points", 0))
        self.legal_basis = str(spec.get("legal_basis", ""))
        self.min_duration_s = float(spec.get("min_duration_s", 0.0))

    @classmethod
    def spec_in(cls, settings: Any) -> dict[str, Any]:
        """The rule's table (`section`) in `settings`."""
        head, *path = cls.section.split(".")
        spec = settings[head]
        for key in path:
            spec = spec[key]
        return spec

    @classmethod
    def from_settings(cls, settings: Any) -> Rule:
        return cls(cls.spec_in(settings), settings)

    def streams(self, frame: FixFrame, carried: Carried) -> list[Stream]:
        return []

    def point_episodes(self, frame: FixFrame, carried: Carried) -> PointEpisodes | None:
        return None

    def end_of_batch(self, frame: FixFrame, carried: Carried) -> dict[str, np.ndarray]:
        """The new values of the columns in `keeps`, one per fix of the frame: each truck keeps
        the value at its last fix. A column left out keeps its carried value."""
        return {}

    def severity(self, duration_s: float, worst: float) -> str:
        return "minor"

    def flag_detail(self) -> dict[str, Any]:
        """What a flagged point episode records beside the thresholds (see PointEpisodes)."""
        return {}

    def parameters(self) -> dict[str, Any]:
        """Thresholds recorded with each violation (what the officer sees as "rule used")."""
        return {k: v for k, v in self.spec.items() if k != "legal_basis"}
