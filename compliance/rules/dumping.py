"""乱倒乱卸 and unloading at a disposal site that is not on the permit.

Unloading is either the dump body lifted, or the load going from loaded to empty between two
fixes. Outside every construction and disposal site that is illegal dumping; inside a
disposal site it must be one on the truck's permit, within its opening hours, or it is an
unapproved disposal. Lifting inside the permit's origin site (e.g. levelling) is neither.

A load drop proves unloading *here* only when the fix before it is at most
`compliance.max_gap_s` older: after a longer silence the truck may have unloaded anywhere on
the way (its approved disposal site included), so the place it reappears is no evidence of
where. Such a drop after the truck went dark marks the going-dark violation instead
(`unloaded_while_dark`, compliance.rules.dark).
"""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, Rule, Stream


def load_dropped(frame, carried: Carried) -> np.ndarray:
    """Loaded at the previous fix of the truck, empty at this one (across any gap)."""
    was_loaded = frame.previous(frame.loaded, carried.last_loaded)
    return was_loaded & (frame.cols.load == 0)


def located_load_drop(frame, carried: Carried, max_gap_s: float) -> np.ndarray:
    """A load drop whose place is known: the previous fix is at most `max_gap_s` older."""
    gap = frame.t - frame.previous(frame.t, carried.last_t)
    return load_dropped(frame, carried) & (gap <= max_gap_s)


class IllegalDumping(Rule):
    kind = "illegal_dumping"
    label = {"zh": "乱倒乱卸", "en": "illegal dumping"}
    legal_basis_key = "construction_waste_rules.art_15"
    stream_names = ("unloading_outside_sites",)

    def __init__(self, spec, settings) -> None:
        super().__init__(spec, settings)
        self.max_gap_s = float(settings["compliance"]["max_gap_s"])

    def streams(self, frame, carried: Carried) -> list[Stream]:
        outside = (frame.site < 0) & (frame.disposal < 0)
        return [_unloading("unloading_outside_sites", frame, carried, outside, self)]


class UnapprovedDisposal(Rule):
    kind = "unapproved_disposal"
    label = {"zh": "未按核准消纳场处置", "en": "disposal at a site not on the permit"}
    legal_basis_key = "construction_waste_rules.art_14.approved_scope"
    stream_names = ("unloading_at_wrong_site",)

    def __init__(self, spec, settings) -> None:
        super().__init__(spec, settings)
        self.max_gap_s = float(settings["compliance"]["max_gap_s"])

    def streams(self, frame, carried: Carried) -> list[Stream]:
        # Without any valid permit the unloading is part of the unpermitted transport
        # (no_valid_permit): one act, one charge (compliance/concurrence.py).
        wrong = (
            (frame.disposal >= 0)
            & frame.has_permit
            & ~(frame.approved_disposal & frame.disposal_open)
        )
        return [_unloading("unloading_at_wrong_site", frame, carried, wrong, self)]


def _unloading(name, frame, carried: Carried, where: np.ndarray, rule) -> Stream:
    """Lifted for the minimum time, or a located load drop (which proves it at once), at
    `where`. Value 1 marks a fix where the load went from loaded to empty."""
    dropped = located_load_drop(frame, carried, rule.max_gap_s)
    cond = (frame.cols.lift_up | dropped) & where
    return Stream(name, cond, dropped.astype(float), rule.min_duration_s, qualify_value=1.0)
