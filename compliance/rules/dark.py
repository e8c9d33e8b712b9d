"""不在线 / 屏蔽 GPS: no report for longer than `thresholds.dark_after_s` while the truck was
working (moving, loaded or ignition on: `FixFrame.working`), found on the next fix or earlier
by the sweep in compliance.sweep; and terminal alarms for a cut antenna, lost main power or a
GNSS fault. Worst = minutes dark.

Judged fairly, by what the truck was doing at its last fix before the silence (its "dark
class", `dark_class`; the sweep reads the same class from the rule state):

- loaded outside every site and disposal site: always a violation, whatever the terminal
  said (a load on the road with a silent terminal is how loads are dumped unseen);
- stopped with the ignition (ACC) off: none (a parked truck's terminal may sleep);
- an orderly `offline` status from the terminal after that fix: none
  (compliance.dark_excuses, and the sweep, read it from telemetry's device_status);
- empty and stopped inside a site or disposal site: a `notice`, never an alert;
- otherwise `minor`, `serious` after `serious_after_s`.

A truck that went dark loaded and reports again empty unloaded somewhere unseen — the
pattern of switching the terminal off to dump. That gap is always `serious`, whatever its
class, and carries `unloaded_while_dark: true` in its rule parameters (the dumping rules do
not guess a place).
"""

from __future__ import annotations

import numpy as np

from compliance.rules.base import Carried, PointEpisodes, Rule, Stream
from compliance.rules.dumping import load_dropped

# Dark classes of a fix (kept per truck as `dark_class`; stored in the rule state when not
# WORKING, where compliance/sweep.py reads it).
LOADED_OUTSIDE, PARKED_OFF, PARKED_IN_PLACE, WORKING = 0, 1, 2, 3


def dark_class(frame) -> np.ndarray:
    """Each fix's dark class (see the module docstring), in order of precedence."""
    in_place = (frame.site >= 0) | (frame.disposal >= 0)
    stopped = ~frame.moving
    out = np.full(len(frame), WORKING, np.int8)
    out[~frame.loaded & stopped & in_place] = PARKED_IN_PLACE
    out[(frame.cols.acc == 0) & stopped] = PARKED_OFF
    out[frame.loaded & ~in_place] = LOADED_OUTSIDE
    return out


class GoingDark(Rule):
    kind = "going_dark"
    label = {"zh": "不在线/屏蔽定位", "en": "offline / GPS shielded"}
    legal_basis_key = "city.positioning_online"
    unit = "min"
    stream_names = ("terminal_alarm",)
    keeps = {"dark_class": float(WORKING)}

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
        prev_class = frame.previous(
            frame.once("dark_class", lambda: dark_class(frame)).astype(float),
            carried.kept["dark_class"],
        )
        gap = t - prev_t
        unloaded = load_dropped(frame, carried)
        hit = np.flatnonzero(
            np.isfinite(prev_t)
            & (gap > self.dark_after_s)
            & prev_working
            & ((prev_class != PARKED_OFF) | unloaded)
        )
        unloaded, cls = unloaded[hit], prev_class[hit]
        return PointEpisodes(
            hit,
            prev_t[hit],
            t[hit],
            gap[hit] / 60.0,
            flagged=unloaded,
            low=(cls == PARKED_IN_PLACE) & ~unloaded,
            excusable=(cls != LOADED_OUTSIDE) & ~unloaded,
        )

    def end_of_batch(self, frame, carried: Carried) -> dict[str, np.ndarray]:
        return {"dark_class": frame.once("dark_class", lambda: dark_class(frame)).astype(float)}

    def flag_detail(self) -> dict:
        return {"unloaded_while_dark": True}

    def severity(self, duration_s: float, worst: float) -> str:
        return "serious" if duration_s >= self.serious_after_s else "minor"
