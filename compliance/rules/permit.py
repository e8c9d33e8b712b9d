"""无有效核准: a registered truck carrying loads outside a site with no valid permit.

Loaded is enough, moving or not: a stop at a light or in a jam is part of the same unlawful
transport, and requiring movement split one trip into a violation per stretch between
stops (each of which had to last the minimum again)."""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, Rule, Stream


class NoValidPermit(Rule):
    kind = "no_valid_permit"
    label = {"zh": "无有效核准", "en": "no valid permit"}
    legal_basis_key = "construction_waste_rules.art_25"
    stream_names = ("loaded_without_permit",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        cond = frame.loaded & ~frame.has_permit & (frame.site < 0)
        return [Stream("loaded_without_permit", cond, np.ones(len(frame)), self.min_duration_s)]
