"""Zone records and their validation (kind-specific attributes, geometry, dates).

A `Zone` is what the database stores and the evaluator loads: WGS-84 GeoJSON geometry plus
attributes. `zone_from_properties` validates one imported feature and raises `ZoneError`
with a message naming the problem; importers prefix it with the feature's index and code.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from shapely.validation import explain_validity

from geofence.timewin import WindowError, normalise_windows

KINDS = ("site", "disposal", "route", "restricted", "speed")
# The int8 code of each kind in the evaluator's per-zone `kind` array (geofence.index).
KIND_CODE = {kind: i for i, kind in enumerate(KINDS)}
SITE, DISPOSAL, ROUTE, RESTRICTED, SPEED = (KIND_CODE[k] for k in KINDS)
# Administrative districts come through the same files and validation as zones but are not
# zones the rules test fixes against: stored in geofence_districts (geofence.store), never
# in the index. Their code is the 6-digit administrative division code (行政区划代码).
DISTRICT = "district"
IMPORT_KINDS = (*KINDS, DISTRICT)
AREA_KINDS = ("site", "disposal", "restricted", "speed")
KIND_ALIASES = {
    "site": "site",
    "construction_site": "site",
    "工地": "site",
    "disposal": "disposal",
    "disposal_site": "disposal",
    "消纳场": "disposal",
    "route": "route",
    "approved_route": "route",
    "路线": "route",
    "restricted": "restricted",
    "restricted_zone": "restricted",
    "禁区": "restricted",
    "speed": "speed",
    "speed_zone": "speed",
    "限速区": "speed",
    "district": DISTRICT,
    "行政区": DISTRICT,
}
# Properties every kind understands; the rest are kind-specific (ATTRIBUTES).
COMMON = ("kind", "code", "name", "district", "valid_from", "valid_to", "active")
ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "site": ("radius_m", "address", "note"),
    "disposal": ("radius_m", "opening_hours", "daily_capacity_m3", "address", "note"),
    "route": ("width_m", "note"),
    "restricted": ("radius_m", "windows", "note"),
    "speed": ("radius_m", "speed_limit_kmh", "road_class", "note"),
    DISTRICT: (),
}
# Road classes a speed zone may name instead of a limit; the limit then comes from
# `[thresholds] speed_limit_<class>_kmh` (GB 1589 / the city's rules for muck trucks).
ROAD_CLASSES = ("expressway", "urban_expressway", "other")
ROAD_CLASS_ALIASES = {
    "高速公路": "expressway",
    "城市快速路": "urban_expressway",
    "快速路": "urban_expressway",
    "其他道路": "other",
    "其他": "other",
}
# A district has no district of its own, no validity dates (a boundary change is a new
# import) and no circle.
DISTRICT_PROPERTIES = ("kind", "code", "name", "active")


class ZoneError(ValueError):
    """A zone definition that cannot be stored; the message names the problem."""


@dataclass(frozen=True)
class Zone:
    code: str
    kind: str
    name: str
    geometry: dict[str, Any]  # GeoJSON, WGS-84
    district: str | None = None
    valid_from: dt.date | None = None
    valid_to: dt.date | None = None
    active: bool = True
    attributes: dict[str, Any] = field(default_factory=dict)
    id: int | None = None  # database id, once stored

    @property
    def width_m(self) -> float:
        return float(self.attributes.get("width_m", 0.0))

    def to_feature(self) -> dict[str, Any]:
        props: dict[str, Any] = {"kind": self.kind, "code": self.code, "name": self.name}
        if self.district is not None:
            props["district"] = self.district
        if self.valid_from is not None:
            props["valid_from"] = self.valid_from.isoformat()
        if self.valid_to is not None:
            props["valid_to"] = self.valid_to.isoformat()
        props["active"] = self.active
        props.update(self.attributes)
        return {"type": "Feature", "id": self.code, "properties": props, "geometry": self.geometry}


def normalise_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind.strip().lower() not in KIND_ALIASES:
        raise ZoneError(f"unknown kind {kind!r}; expected one of {', '.join(IMPORT_KINDS)}")
    return KIND_ALIASES[kind.strip().lower()]


def _date(value: Any, key: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ZoneError(f"{key} {value!r} is not a date (YYYY-MM-DD)") from None


def _positive(value: Any, key: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ZoneError(f"{key} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ZoneError(f"{key} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


def _check_positions(coords: Any, path: str = "coordinates") -> None:
    """Every position a finite [lon, lat] within range."""
    if isinstance(coords, list | tuple) and coords and isinstance(coords[0], int | float):
        if len(coords) < 2 or not all(
            isinstance(c, int | float) and not isinstance(c, bool) for c in coords
        ):
            raise ZoneError(f"invalid coordinates at {path}: {coords!r}")
        lon, lat = float(coords[0]), float(coords[1])
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise ZoneError(f"invalid coordinates at {path}: {coords!r} (not finite)")
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            raise ZoneError(
                f"invalid coordinates at {path}: {coords!r} (lon must be -180..180, "
                "lat -90..90; are lon and lat swapped?)"
            )
        return
    if not isinstance(coords, list | tuple) or not coords:
        raise ZoneError(f"invalid coordinates at {path}: {coords!r}")
    for i, item in enumerate(coords):
        _check_positions(item, f"{path}[{i}]")


_GEOMETRIES = {
    "route": ("LineString", "MultiLineString"),
    "area": ("Polygon", "MultiPolygon", "Point"),
    DISTRICT: ("Polygon", "MultiPolygon"),
}


def validate_geometry(kind: str, geometry: Any, attributes: dict[str, Any]) -> shapely.Geometry:
    """Check a WGS-84 GeoJSON geometry for `kind`; returns it as a shapely geometry."""
    if not isinstance(geometry, dict) or "type" not in geometry:
        raise ZoneError("missing geometry")
    gtype = geometry.get("type")
    allowed = _GEOMETRIES[kind if kind in ("route", DISTRICT) else "area"]
    if gtype not in allowed:
        raise ZoneError(f"a {kind} needs a {' or '.join(allowed)} geometry, got {gtype!r}")
    _check_positions(geometry.get("coordinates"))
    try:
        geom = shapely.geometry.shape(geometry)
    except Exception as exc:  # shapely raises several types for malformed rings
        raise ZoneError(f"invalid {gtype} geometry: {exc}") from None
    if geom.is_empty:
        raise ZoneError("empty geometry")
    minx, _, maxx, _ = geom.bounds
    if maxx - minx > 180.0:
        raise ZoneError(
            "geometry spans more than 180 degrees of longitude (crosses the antimeridian); split it"
        )
    if gtype == "Point":
        if "radius_m" not in attributes:
            raise ZoneError("a Point zone needs radius_m (a circle)")
    elif kind == "route":
        if shapely.length(geom) == 0.0:
            raise ZoneError("route has zero length (all its points are the same)")
    else:
        if not geom.is_valid:
            raise ZoneError(
                f"invalid polygon: {explain_validity(geom)} (self-intersecting or badly "
                "nested rings are rejected, not repaired: redraw the zone)"
            )
        if geom.area == 0.0:
            raise ZoneError("polygon has zero area")
    return geom


def zone_from_properties(
    props: dict[str, Any],
    geometry: Any,
    *,
    default_kind: str | None = None,
    code: str | None = None,
    center: tuple[float, float] | None = None,
    max_distance_km: float | None = None,
) -> Zone:
    """Validate one feature's properties and WGS-84 geometry into a `Zone`."""
    if not isinstance(props, dict):
        raise ZoneError("properties must be an object")
    kind = props.get("kind", default_kind)
    if kind is None:
        raise ZoneError("missing kind (set properties.kind or pass --kind)")
    kind = normalise_kind(kind)
    props = dict(props)
    if "id" in props:  # `id` is a common name for the code (many GIS exports write it)
        alias = props.pop("id")
        if "code" in props and props["code"] != alias:
            raise ZoneError(f"code {props['code']!r} and id {alias!r} differ; give one of them")
        props["code"] = (
            str(alias) if isinstance(alias, int) and not isinstance(alias, bool) else alias
        )
    if "corridor_width_m" in props:
        # The full width of a corridor, as drawn on a plan; the rules use the half-width
        # (the allowed distance from the centre line), so both cannot be entered by mistake.
        full = _positive(props.pop("corridor_width_m"), "corridor_width_m")
        if "width_m" in props and _positive(props["width_m"], "width_m") * 2 != full:
            raise ZoneError(
                f"width_m {props['width_m']} is the half-width and corridor_width_m {full:g} "
                "the full width: they disagree; give one of them"
            )
        props["width_m"] = full / 2
    code = props.get("code", code)
    if not isinstance(code, str) or not code.strip():
        raise ZoneError("missing code (properties.code or properties.id, or the feature id)")
    code = code.strip()
    if kind == DISTRICT:
        _check_district(props, code)
    name = props.get("name") or code
    if not isinstance(name, str):
        raise ZoneError(f"name must be text, got {name!r}")
    district = props.get("district")
    if district is not None and not isinstance(district, str):
        raise ZoneError(f"district must be text, got {district!r}")
    valid_from = _date(props.get("valid_from"), "valid_from")
    valid_to = _date(props.get("valid_to"), "valid_to")
    if valid_from and valid_to and valid_to < valid_from:
        raise ZoneError(f"valid_to {valid_to} is before valid_from {valid_from}")
    active = props.get("active", True)
    if not isinstance(active, bool):
        raise ZoneError(f"active must be true or false, got {active!r}")

    allowed = ATTRIBUTES[kind]
    common = DISTRICT_PROPERTIES if kind == DISTRICT else COMMON
    unknown = sorted(set(props) - set(common) - set(allowed))
    if unknown:
        raise ZoneError(
            f"unknown properties {unknown} for a {kind}; allowed: {', '.join(common + allowed)}"
        )
    attrs: dict[str, Any] = {k: props[k] for k in allowed if props.get(k) is not None}
    if "radius_m" in attrs:
        attrs["radius_m"] = _positive(attrs["radius_m"], "radius_m")
    if kind == "route":
        if "width_m" not in attrs:
            raise ZoneError(
                "a route needs width_m (the allowed distance from the centre line, i.e. half the "
                "corridor's width, in metres) or corridor_width_m (the full width); or --width-m "
                "on import"
            )
        attrs["width_m"] = _positive(attrs["width_m"], "width_m")
    if kind == "speed":
        if "road_class" in attrs:
            road_class = str(attrs["road_class"]).strip()
            road_class = ROAD_CLASS_ALIASES.get(road_class, road_class)
            if road_class not in ROAD_CLASSES:
                raise ZoneError(
                    f"road_class {attrs['road_class']!r} is not one of {', '.join(ROAD_CLASSES)}"
                )
            attrs["road_class"] = road_class
        if "speed_limit_kmh" not in attrs and "road_class" not in attrs:
            raise ZoneError("a speed zone needs speed_limit_kmh or road_class")
        if "speed_limit_kmh" in attrs:
            attrs["speed_limit_kmh"] = _positive(attrs["speed_limit_kmh"], "speed_limit_kmh")
    if "daily_capacity_m3" in attrs:
        attrs["daily_capacity_m3"] = _positive(
            attrs["daily_capacity_m3"], "daily_capacity_m3", allow_zero=True
        )
    for key in ("windows", "opening_hours"):
        if key in attrs:
            try:
                attrs[key] = normalise_windows(attrs[key])
            except WindowError as exc:
                raise ZoneError(f"bad time window in {key}: {exc}") from None

    geom = validate_geometry(kind, geometry, attrs)
    check_distance(center, max_distance_km, geom, "zone")
    return Zone(
        code=code,
        kind=kind,
        name=name,
        geometry=shapely.geometry.mapping(geom) if geometry.get("type") != "Point" else geometry,
        district=district,
        valid_from=valid_from,
        valid_to=valid_to,
        active=active,
        attributes=attrs,
    )


def _check_district(props: dict[str, Any], code: str) -> None:
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        raise ZoneError(
            f"a district code is the 6-digit administrative division code "
            f"(行政区划代码, e.g. 440304), got {code!r}"
        )
    name = props.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ZoneError("a district needs a name (e.g. 福田区)")


def check_distance(
    center: tuple[float, float] | None,
    max_distance_km: float | None,
    geom: shapely.Geometry,
    what: str,
) -> None:
    """Refuse a geometry farther than `max_distance_km` from the city centre (no check
    without a centre)."""
    if center is None or max_distance_km is None:
        return
    far = _distance_km(center, geom)
    if far > max_distance_km:
        raise ZoneError(
            f"{what} lies {far:.0f} km from the city centre ({center[0]:g}, {center[1]:g}); the "
            f"metric projection is only trusted within geofence.max_zone_distance_km = "
            f"{max_distance_km:g} km. Wrong coordinates, or another city: set city.center_lon "
            "and city.center_lat in the city settings file ($MUCK_CONFIG or muck --config), "
            "or let `muck city init --from-zones FILE` propose and write them from the zones"
        )


def _distance_km(center: tuple[float, float], geom: shapely.Geometry) -> float:
    """Largest great-circle distance (km) from the centre to the geometry's bounding box."""
    from pyproj import Geod

    minx, miny, maxx, maxy = geom.bounds
    lons = np.array([minx, minx, maxx, maxx])
    lats = np.array([miny, maxy, miny, maxy])
    _, _, dist = Geod(ellps="WGS84").inv(np.full(4, center[0]), np.full(4, center[1]), lons, lats)
    return float(np.max(dist)) / 1000.0


@dataclass(frozen=True)
class BanDay:
    """An extra ban (holiday, exam day) on restricted zones, in local time.

    zone_code None = every restricted zone. start/end None = the whole day; an end not after
    the start runs past midnight into the next day.
    """

    day: dt.date
    zone_code: str | None = None
    start: dt.time | None = None
    end: dt.time | None = None
    reason: str = ""
    id: int | None = None
