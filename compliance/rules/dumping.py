"""乱倒乱卸 and unloading at a disposal site that is not on the permit.

Unloading is either the dump body lifted, or the load going from loaded to empty between two
fixes. Outside every construction and disposal site that is illegal dumping; inside a
disposal site it must be one on the truck's permit, within its opening hours, or it is an
unapproved disposal. Lifting inside the permit's origin site (e.g. levelling) is neither.
"""

from __future__ import annotations

import numpy as np

from compliance.frame import previous
from compliance.rules.base import Carried, Rule, Stream


def load_dropped(frame, carried: Carried) -> np.ndarray:
    was_loaded = previous(frame, frame.loaded, carried.last_loaded)
    return was_loaded & (frame.cols.load == 0)


class IllegalDumping(Rule):
    kind = "illegal_dumping"
    unit = ""  # no measure: the start, end and evidence tell it
    stream_names = ("unloading_outside_sites",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        outside = (frame.site < 0) & (frame.disposal < 0)
        return [_unloading("unloading_outside_sites", frame, carried, outside, self.min_duration_s)]


class UnapprovedDisposal(Rule):
    kind = "unapproved_disposal"
    unit = ""  # no measure: the start, end and evidence tell it
    stream_names = ("unloading_at_wrong_site",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        wrong = (frame.disposal >= 0) & ~(frame.approved_disposal & frame.disposal_open)
        return [_unloading("unloading_at_wrong_site", frame, carried, wrong, self.min_duration_s)]


def _unloading(name, frame, carried: Carried, where: np.ndarray, min_duration_s: float) -> Stream:
    """Lifted for the minimum time, or a load drop (which proves it at once), at `where`.
    Value 1 marks a fix where the load went from loaded to empty."""
    dropped = load_dropped(frame, carried)
    cond = (frame.cols.lift_up | dropped) & where
    return Stream(name, cond, dropped.astype(float), min_duration_s, qualify_value=1.0)
