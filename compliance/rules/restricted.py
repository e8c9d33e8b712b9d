"""闯禁区 / 禁行时段: inside a restricted zone while its ban is in force; carrying loads
outside the permit's operating hours.

Carrying is loaded outside every site, moving or not: a stop at a light is part of the same
transport (requiring movement split an out-of-hours trip at every stop, and stretches shorter
than the minimum between stops raised nothing at all)."""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, Rule, Stream


class RestrictedZone(Rule):
    kind = "restricted_zone"
    label = {"zh": "闯禁区", "en": "entering a restricted zone"}
    legal_basis_key = "city.restricted_zones"
    unit = "km/h"
    stream_names = ("inside_banned_zone",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        return [
            Stream(
                "inside_banned_zone", frame.restricted >= 0, frame.cols.speed, self.min_duration_s
            )
        ]


class RestrictedHours(Rule):
    kind = "restricted_hours"
    label = {"zh": "禁行时段运输", "en": "transport in banned hours"}
    legal_basis_key = "construction_waste_rules.art_14.route_and_hours"
    stream_names = ("loaded_outside_hours",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        cond = frame.loaded & (frame.site < 0) & frame.has_permit & ~frame.within_permit_hours
        return [Stream("loaded_outside_hours", cond, np.ones(len(frame)), self.min_duration_s)]
