"""无有效核准: a registered truck carrying loads, moving outside a site, with no valid permit."""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, Rule, Stream


class NoValidPermit(Rule):
    kind = "no_valid_permit"
    unit = ""
    stream_names = ("loaded_without_permit",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        cond = frame.loaded & frame.moving & ~frame.has_permit & (frame.site < 0)
        return [Stream("loaded_without_permit", cond, np.ones(len(frame)), self.min_duration_s)]
