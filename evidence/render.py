"""Server-side drawings of an evidence record, as SVG: the track on the zones (in the city's
metric projection, geofence/projection.py, so that a 50 m corridor looks 50 m wide; no tile
server needed), and the sensor timeline (speed, lid, lift, load, ACC, alarms)."""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import shapely
import shapely.geometry

from evidence.content import Evidence
from geofence.projection import Projector

# The CJK font WeasyPrint embeds (fonts-noto-cjk through fontconfig).
FONT = "font-family=\"'MuckWatch CJK SC', 'Noto Sans CJK SC', sans-serif\""
ZONE_STYLE = {
    "site": ("#1565c0", "#1565c0"),
    "disposal": ("#2e7d32", "#2e7d32"),
    "route": ("#6a1b9a", "#6a1b9a"),
    "restricted": ("#c62828", "#c62828"),
    "speed": ("#ef6c00", "#ef6c00"),
}


class _Frame:
    """Projected metres → SVG pixels, fitted to a bounding box with a margin."""

    def __init__(self, box: tuple[float, float, float, float], w: int, h: int, pad: int):
        x0, y0, x1, y1 = box
        span_x, span_y = max(x1 - x0, 50.0), max(y1 - y0, 50.0)
        self.scale = min((w - 2 * pad) / span_x, (h - 2 * pad) / span_y)
        self.cx, self.cy = (x0 + x1) / 2, (y0 + y1) / 2
        self.w, self.h = w, h

    def px(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (
            self.w / 2 + (np.asarray(x) - self.cx) * self.scale,
            self.h / 2 - (np.asarray(y) - self.cy) * self.scale,
        )


def _points(xs, ys) -> str:
    return " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys, strict=True))


def _geometry_svg(geom, frame: _Frame, kind: str, width_m: float | None) -> list[str]:
    stroke, fill = ZONE_STYLE.get(kind, ("#455a64", "#455a64"))
    out = []
    parts = getattr(geom, "geoms", [geom])
    for part in parts:
        if isinstance(part, shapely.geometry.Polygon):
            rings = [part.exterior, *part.interiors]
            d = " ".join(
                "M"
                + " L".join(f"{x:.1f},{y:.1f}" for x, y in zip(*frame.px(*r.xy), strict=True))
                + " Z"
                for r in rings
            )
            out.append(
                f'<path d="{d}" fill="{fill}" fill-opacity="0.15" stroke="{stroke}" '
                'stroke-width="1.5" fill-rule="evenodd"/>'
            )
        elif isinstance(part, shapely.geometry.LineString):
            xs, ys = frame.px(*part.xy)
            if width_m:
                out.append(
                    f'<polyline points="{_points(xs, ys)}" fill="none" stroke="{stroke}" '
                    f'stroke-opacity="0.18" stroke-width="{max(2 * width_m * frame.scale, 2):.1f}" '
                    'stroke-linecap="round" stroke-linejoin="round"/>'
                )
            out.append(
                f'<polyline points="{_points(xs, ys)}" fill="none" stroke="{stroke}" '
                'stroke-width="1" stroke-dasharray="6 4"/>'
            )
        elif isinstance(part, shapely.geometry.Point):
            x, y = frame.px(part.x, part.y)
            out.append(f'<circle cx="{float(x):.1f}" cy="{float(y):.1f}" r="4" fill="{fill}"/>')
    return out


def track_svg(evidence: Evidence, city: dict[str, Any], w: int = 720, h: int = 460) -> str:
    """The track (episode in red, margins grey) on the zones it concerns, with a scale bar."""
    proj = Projector(city)
    fixes = [f for f in evidence.fixes if f.lat is not None and f.lon is not None]
    fx, fy = proj.forward([f.lon for f in fixes], [f.lat for f in fixes])
    zones = []
    for zone in evidence.zones:
        try:
            geom = proj.geometry(shapely.geometry.shape(zone.geometry))
        except Exception:  # noqa: BLE001 - a broken geometry is drawn as nothing, not a 500
            continue
        zones.append((zone, geom))
    if len(fixes):
        box = [fx.min(), fy.min(), fx.max(), fy.max()]
        own = [g for z, g in zones if z.role == "violation" and g.area > 0]
        for g in own:  # the violation's own zone is shown whole when it is not huge
            b = g.bounds
            if max(b[2] - b[0], b[3] - b[1]) < 5 * max(box[2] - box[0], box[3] - box[1], 200):
                box = [min(box[0], b[0]), min(box[1], b[1]), max(box[2], b[2]), max(box[3], b[3])]
    elif zones:
        box = list(shapely.GeometryCollection([g for _, g in zones]).bounds)
    else:
        box = [0.0, 0.0, 100.0, 100.0]
    frame = _Frame(tuple(box), w, h, 30)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" {FONT} font-size="11">',
        f'<rect width="{w}" height="{h}" fill="#fafafa" stroke="#bbb"/>',
        f'<clipPath id="c"><rect width="{w}" height="{h}"/></clipPath><g clip-path="url(#c)">',
    ]
    for zone, geom in zones:
        width = zone.attributes.get("width_m") if zone.kind == "route" else None
        out += _geometry_svg(geom, frame, zone.kind, float(width) if width else None)
    if len(fixes):
        xs, ys = frame.px(fx, fy)
        out.append(
            f'<polyline points="{_points(xs, ys)}" fill="none" stroke="#78909c" '
            'stroke-width="1.5" stroke-dasharray="4 3"/>'
        )
        inside = [i for i, f in enumerate(fixes) if f.in_episode]
        if inside:
            a, b = inside[0], inside[-1] + 1
            out.append(
                f'<polyline points="{_points(xs[a:b], ys[a:b])}" fill="none" stroke="#d50000" '
                'stroke-width="3"/>'
            )
            out.append(f'<circle cx="{xs[a]:.1f}" cy="{ys[a]:.1f}" r="6" fill="#2e7d32"/>')
            if evidence.facts.ended_at is not None:
                out.append(
                    f'<circle cx="{xs[b - 1]:.1f}" cy="{ys[b - 1]:.1f}" r="6" fill="#d50000"/>'
                )
        out += [
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="1.6" fill="#37474f"/>'
            for x, y in zip(xs, ys, strict=True)
        ]
    out.append("</g>")
    for i, (zone, _geom) in enumerate(zones):  # legend
        stroke, _ = ZONE_STYLE.get(zone.kind, ("#455a64", ""))
        out.append(
            f'<text x="8" y="{16 + 14 * i}" fill="{stroke}">■ {escape(zone.code)} '
            f"{escape(zone.name)}</text>"
        )
    # scale bar: a round number of metres about a fifth of the width
    target = (w / 5) / frame.scale
    metres = next(m for m in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 1e9)
                  if m >= target * 0.5)  # fmt: skip
    bar = metres * frame.scale
    label = f"{metres / 1000:g} km" if metres >= 1000 else f"{metres:g} m"
    out.append(
        f'<line x1="{w - 20 - bar:.1f}" y1="{h - 14}" x2="{w - 20}" y2="{h - 14}" '
        'stroke="#000" stroke-width="2"/>'
        f'<text x="{w - 20 - bar:.1f}" y="{h - 20}">{label}</text>'
        f'<text x="{w - 20}" y="16" text-anchor="end">N ↑</text>'
    )
    out.append("</svg>")
    return "".join(out)


LANES = (
    ("lid", "车厢盖", {"open": "#d50000", "closed": "#c8e6c9"}),
    ("lift", "举升", {"up": "#ef6c00", "down": "#e0e0e0"}),
    ("load", "载重", {"full": "#5d4037", "half": "#a1887f", "empty": "#eeeeee"}),
    ("acc", "ACC", {True: "#2e7d32", False: "#e0e0e0"}),
)


def sensor_svg(evidence: Evidence, tz: str, w: int = 720, h: int = 300) -> str:
    """Speed over time, with one lane per body sensor and the alarms, the episode shaded;
    times on the axis in the city time zone."""
    zone = ZoneInfo(tz)
    t0, t1 = evidence.window_from, evidence.window_to
    span = max((t1 - t0).total_seconds(), 1.0)
    left, right, top = 60, 10, 10
    speed_h = 150
    lane_h, lane_gap = 16, 6
    plot_w = w - left - right

    def x(t: dt.datetime) -> float:
        return left + (t - t0).total_seconds() / span * plot_w

    fixes = evidence.fixes
    speeds = [f.speed for f in fixes if f.speed is not None]
    vmax = max([*speeds, 10.0]) * 1.15
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" {FONT} font-size="10">',
        f'<rect width="{w}" height="{h}" fill="#fff" stroke="#bbb"/>',
    ]
    start = evidence.facts.started_at
    end = evidence.facts.ended_at or t1
    out.append(
        f'<rect x="{x(start):.1f}" y="{top}" width="{max(x(end) - x(start), 1):.1f}" '
        f'height="{h - top - 30}" fill="#ffebee"/>'
    )
    base = top + speed_h
    out.append(f'<line x1="{left}" y1="{base}" x2="{w - right}" y2="{base}" stroke="#999"/>')
    for v in np.linspace(0, vmax, 4):
        y = base - v / vmax * speed_h
        out.append(
            f'<text x="{left - 4}" y="{y + 3:.1f}" text-anchor="end">{v:.0f}</text>'
            f'<line x1="{left}" y1="{y:.1f}" x2="{w - right}" y2="{y:.1f}" stroke="#eee"/>'
        )
    out.append(f'<text x="4" y="{top + 10}">km/h</text>')
    pts = [(x(f.t), base - f.speed / vmax * speed_h) for f in fixes if f.speed is not None]
    if pts:
        out.append(
            '<polyline points="'
            + " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
            + '" fill="none" stroke="#1565c0" stroke-width="1.5"/>'
        )
    y = base + 12
    for field, label, colours in LANES:
        out.append(f'<text x="{left - 4}" y="{y + 12}" text-anchor="end">{label}</text>')
        for i, f in enumerate(fixes):
            value = getattr(f, field)
            if value is None:
                continue
            nxt = fixes[i + 1].t if i + 1 < len(fixes) else f.t
            colour = colours.get(value, "#bdbdbd")
            out.append(
                f'<rect x="{x(f.t):.1f}" y="{y}" width="{max(x(nxt) - x(f.t), 1.5):.1f}" '
                f'height="{lane_h}" fill="{colour}"/>'
            )
        y += lane_h + lane_gap
    out.append(f'<text x="{left - 4}" y="{y + 12}" text-anchor="end">报警</text>')
    for f in fixes:
        if f.alarms:
            out.append(
                f'<text x="{x(f.t):.1f}" y="{y + 12}" fill="#d50000">▲</text>'
                f"<title>{escape(', '.join(f.alarms))}</title>"
            )
    for k in range(6):
        t = t0 + dt.timedelta(seconds=span * k / 5)
        anchor = "start" if k == 0 else "end" if k == 5 else "middle"
        out.append(
            f'<text x="{x(t):.1f}" y="{h - 8}" text-anchor="{anchor}">'
            f"{t.astimezone(zone):%H:%M:%S}</text>"
        )
    out.append("</svg>")
    return "".join(out)
