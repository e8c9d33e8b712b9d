"""偏离核准路线: loaded, on a permit with an approved route, and outside the route corridor
(with hysteresis: off beyond the width, back only nearer than width x re-entry ratio) for
longer than the minimum. Worst = metres from the route; serious after `serious_after_s` or
beyond `serious_distance_m`."""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, Rule, Stream
from geofence.corridor import corridor_hysteresis


class RouteDeviation(Rule):
    kind = "route_deviation"
    label = {"zh": "偏离核准路线", "en": "route deviation"}
    legal_basis_key = "construction_waste_rules.art_14.route_and_hours"
    unit = "m"
    stream_names = ("off_route",)
    # The corridor state (hysteresis) at the truck's last fix; a truck not seen yet is on it.
    keeps = {"on_route": True}

    def __init__(self, spec, settings) -> None:
        super().__init__(spec, settings)
        self.reentry_ratio = float(settings.thresholds["route_reentry_ratio"])
        self.serious_after_s = float(spec["serious_after_s"])
        self.serious_distance_m = float(spec["serious_distance_m"])

    def on_route(self, frame, carried: Carried) -> np.ndarray:
        """Inside the corridor (or without a route) at each fix; computed once per batch, for
        the streams and for the carry after the batch."""
        return frame.once((self.kind, "on_route"), lambda: self._on_route(frame, carried))

    def _on_route(self, frame, carried: Carried) -> np.ndarray:
        has_route = ~np.isnan(frame.route_distance)
        if not has_route.any():
            return np.ones(len(frame), bool)
        on = corridor_hysteresis(
            np.where(has_route, frame.route_distance, 0.0),
            np.where(has_route, frame.route_width, 1.0),
            carried.kept["on_route"][frame.slot],
            self.reentry_ratio,
            group=frame.slot,
        )
        return on | ~has_route

    def end_of_batch(self, frame, carried: Carried) -> dict[str, np.ndarray]:
        return {"on_route": self.on_route(frame, carried)}

    def streams(self, frame, carried: Carried) -> list[Stream]:
        on = self.on_route(frame, carried)
        cond = frame.loaded & frame.has_permit & ~on & (frame.site < 0) & (frame.disposal < 0)
        distance = np.nan_to_num(frame.route_distance, nan=0.0)
        # The fast distance is capped at the index's search radius; the worst value is
        # evidence, so measure the deviating fixes beyond it exactly (they are few).
        radius = frame.index.route_radius_m(frame.route_index)
        far = cond & (frame.route_index >= 0) & (distance >= radius)
        if far.any():
            distance = distance.copy()
            distance[far] = frame.index.route_distance_exact(
                frame.cols.lon[far], frame.cols.lat[far], frame.route_index[far]
            )
        return [Stream("off_route", cond, distance, self.min_duration_s)]

    def severity(self, duration_s: float, worst: float) -> str:
        serious = duration_s >= self.serious_after_s or worst >= self.serious_distance_m
        return "serious" if serious else "minor"
