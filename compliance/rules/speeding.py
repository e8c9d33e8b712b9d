"""超速: over the applicable limit (speed zone, else the default for other roads) for longer
than the minimum; one violation per episode, worst = km/h over the limit."""

from __future__ import annotations

from compliance.rules.base import Carried, Rule, Stream


class Speeding(Rule):
    kind = "speeding"
    label = {"zh": "超速", "en": "speeding"}
    legal_basis_key = "road_traffic_safety_law.art_42"
    unit = "km/h over"
    stream_names = ("over_limit",)

    def __init__(self, spec, settings) -> None:
        super().__init__(spec, settings)
        self.tolerance = float(spec["tolerance_kmh"])
        self.serious_over = float(spec["serious_over_kmh"])

    def streams(self, frame, carried: Carried) -> list[Stream]:
        over = frame.cols.speed - frame.speed_limit
        return [Stream("over_limit", over > self.tolerance, over, self.min_duration_s)]

    def severity(self, duration_s: float, worst: float) -> str:
        return "serious" if worst >= self.serious_over else "minor"
