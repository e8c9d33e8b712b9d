"""The platform's thresholds as the simulator needs them, read from the settings the rules run
with (core/defaults.toml and a city's own file) rather than copied: the ground truth must
mean what the rules mean, and the city's roads must carry the limits the rules apply.

A city or fleet built without settings uses the shipped defaults (`shipped_settings`), so that
it depends on its arguments alone; `muck simulate`, `muck accuracy` and `muck demo` pass the
settings they run with.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from core.config import DEFAULTS_PATH, Settings, load_settings


@functools.cache
def shipped_settings() -> Settings:
    """core/defaults.toml alone, whatever MUCK_CONFIG says."""
    # The defaults file named as the city's file overrides nothing and keeps MUCK_CONFIG out.
    return load_settings(DEFAULTS_PATH)


def speed_limits(settings: Settings | None = None) -> dict[str, float]:
    """Muck-truck speed limit per road class (km/h), `[thresholds] speed_limit_<class>_kmh`,
    read as the geofence reads them for speed zones that name a road class."""
    from geofence.index import GeofenceConfig  # shapely and pyproj: only when asked

    return dict(GeofenceConfig.from_settings(settings or shipped_settings()).road_class_limits)


@dataclass(frozen=True)
class RuleThresholds:
    """What the ground truth and the simulated devices judge by."""

    speed_limits: dict[str, float]  # [thresholds] speed_limit_<class>_kmh, per road class
    speed_tolerance_kmh: float  # [rules.speeding] tolerance_kmh: speeding starts above it
    moving_kmh: float  # [compliance] moving_kmh: slower counts as standing still
    # [thresholds] route_reentry_ratio: off route beyond the corridor width, back on only
    # nearer than width x this (hysteresis)
    route_reentry_ratio: float
    anpr_window_s: float  # [compliance] anpr_match_window_min, in seconds
    anpr_radius_m: float  # [compliance] anpr_match_radius_m
    anpr_min_confidence: float  # [compliance]: plate reads below it are not confident

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> RuleThresholds:
        settings = settings or shipped_settings()
        compliance = settings["compliance"]
        return cls(
            speed_limits=speed_limits(settings),
            speed_tolerance_kmh=float(settings["rules"]["speeding"]["tolerance_kmh"]),
            moving_kmh=float(compliance["moving_kmh"]),
            route_reentry_ratio=float(settings.thresholds["route_reentry_ratio"]),
            anpr_window_s=60.0 * compliance["anpr_match_window_min"],
            anpr_radius_m=float(compliance["anpr_match_radius_m"]),
            anpr_min_confidence=float(compliance["anpr_min_confidence"]),
        )
