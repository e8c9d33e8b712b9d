"""未密闭运输: lid open while loaded and moving outside any construction or disposal site."""

from __future__ import annotations

from compliance.rules.base import Carried, Rule, Stream


class UnsealedTransport(Rule):
    kind = "unsealed_transport"
    label = {"zh": "未密闭运输", "en": "unsealed transport"}
    legal_basis_key = "construction_waste_rules.art_14.no_spilling"
    unit = "km/h"
    stream_names = ("lid_open_loaded",)

    def streams(self, frame, carried: Carried) -> list[Stream]:
        cond = (
            frame.cols.lid_open
            & frame.loaded
            & frame.moving
            & (frame.site < 0)
            & (frame.disposal < 0)
        )
        return [Stream("lid_open_loaded", cond, frame.cols.speed, self.min_duration_s)]
