"""不在线 / 屏蔽 GPS: no report for longer than `thresholds.dark_after_s` while the truck was
working (moving, loaded or ignition on: `FixFrame.working`), found on the next fix or earlier
by the sweep in compliance.sweep; and terminal alarms for a cut antenna, lost main power or a
GNSS fault. Worst = minutes dark.

A truck that went dark loaded and reports again empty unloaded somewhere unseen — the
pattern of switching the terminal off to dump. That gap is always `serious` and carries
`unloaded_while_dark: true` in its rule parameters (the dumping rules do not guess a place).
"""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, PointEpisodes, Rule, Stream
from compliance.rules.dumping import load_dropped


class GoingDark(Rule):
    kind = "going_dark"
    label = {"zh": "不在线/屏蔽定位", "en": "offline / GPS shielded"}
    legal_basis_key = "city.positioning_online"
    unit = "min"
    stream_names = ("terminal_alarm",)

    def __init__(self, spec, settings) -> None:
        super().__init__(spec, settings)
        self.dark_after_s = float(settings.thresholds["dark_after_s"])
        self.serious_after_s = float(spec["serious_after_s"])

    def streams(self, frame, carried: Carried) -> list[Stream]:
        return [Stream("terminal_alarm", frame.cols.alarm, np.zeros(len(frame)), 0.0)]

    def point_episodes(self, frame, carried: Carried) -> PointEpisodes | None:
        t = frame.t
        prev_t = frame.previous(t, carried.last_t)
        prev_working = frame.previous(frame.working, carried.last_working)
        gap = t - prev_t
        hit = np.flatnonzero(np.isfinite(prev_t) & (gap > self.dark_after_s) & prev_working)
        unloaded = load_dropped(frame, carried)[hit]
        return PointEpisodes(hit, prev_t[hit], t[hit], gap[hit] / 60.0, flagged=unloaded)

    def flag_detail(self) -> dict:
        return {"unloaded_while_dark": True}

    def severity(self, duration_s: float, worst: float) -> str:
        return "serious" if duration_s >= self.serious_after_s else "minor"
