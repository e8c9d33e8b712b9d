"""Reading zones from GeoJSON, GPX and KML files, and writing them as GeoJSON.

Every reader yields raw features (position in the file, label, properties, GeoJSON geometry in
the file's CRS); `parse_zones` converts them to WGS-84, validates them all and raises one
`ZoneImportError` listing every bad feature by index and code/name, so that nothing is
half-imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.problems import problem_list
from geofence.coords import from_wgs84, normalise_crs, to_wgs84
from geofence.model import (
    ATTRIBUTES,
    Zone,
    ZoneError,
    _check_positions,
    normalise_kind,
    zone_from_properties,
)

FORMATS = ("geojson", "gpx", "kml")


class ZoneImportError(ValueError):
    """A file that cannot be imported; `errors` lists one message per bad feature."""

    def __init__(self, errors: list[str], source: str = "") -> None:
        self.errors = errors
        head, text = problem_list(errors, source)
        bad = sum(1 for e in errors if e.startswith("feature "))
        if bad == 0:
            super().__init__(f"{head}nothing imported: {text}")
            return
        count = f"{bad} bad feature(s)" if bad != 1 else "1 bad feature"
        super().__init__(f"{head}{count}, nothing imported:\n  {text}")


@dataclass
class RawFeature:
    index: int  # position in the file, from 0
    properties: dict[str, Any]
    geometry: Any
    fallback_code: str | None = None  # feature id / Placemark id / GPX name

    def label(self) -> str:
        code = self.properties.get("code") or self.fallback_code
        name = self.properties.get("name")
        parts = [f"feature {self.index}"]
        if code:
            parts.append(f"code {code!r}")
        if name and name != code:
            parts.append(f"name {name!r}")
        return parts[0] + (f" ({', '.join(parts[1:])})" if len(parts) > 1 else "")


def detect_format(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix in (".geojson", ".json"):
        return "geojson"
    if suffix == ".gpx":
        return "gpx"
    if suffix == ".kml":
        return "kml"
    raise ZoneImportError(
        [f"cannot tell the format from the extension {suffix!r}; use .geojson, .gpx or .kml"],
        str(path),
    )


# ---------------------------------------------------------------------------- GeoJSON


def read_geojson(text: str) -> list[RawFeature]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ZoneImportError([f"not valid JSON: {exc}"]) from None
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        items = [doc]
    elif isinstance(doc, dict) and doc.get("type") == "FeatureCollection":
        items = doc.get("features")
        if not isinstance(items, list):
            raise ZoneImportError(["FeatureCollection without a features list"])
    else:
        raise ZoneImportError(["expected a GeoJSON FeatureCollection or Feature"])
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("type") != "Feature":
            out.append(RawFeature(i, {}, None, None))
            continue
        props = item.get("properties") or {}
        fid = item.get("id")
        out.append(RawFeature(i, props, item.get("geometry"), None if fid is None else str(fid)))
    return out


# ---------------------------------------------------------------------------- GPX


def read_gpx(text: str) -> list[RawFeature]:
    import gpxpy
    import gpxpy.gpx

    try:
        gpx = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise ZoneImportError([f"not a valid GPX file: {exc}"]) from None
    out: list[RawFeature] = []
    for route in gpx.routes:
        coords = [[p.longitude, p.latitude] for p in route.points]
        out.append(_gpx_feature(len(out), route.name, route.description, [coords]))
    for track in gpx.tracks:
        parts = [[[p.longitude, p.latitude] for p in seg.points] for seg in track.segments]
        out.append(_gpx_feature(len(out), track.name, track.description, parts))
    if not out:
        raise ZoneImportError(["GPX file holds no route (<rte>) or track (<trk>)"])
    return out


def _gpx_feature(i: int, name: str | None, desc: str | None, parts: list) -> RawFeature:
    parts = [p for p in parts if p]
    if len(parts) == 1:
        geometry: Any = {"type": "LineString", "coordinates": parts[0]}
    else:
        geometry = {"type": "MultiLineString", "coordinates": parts}
    props: dict[str, Any] = {}
    if desc:
        props["name"] = desc.strip()
    return RawFeature(i, props, geometry, name.strip() if name else None)


# ---------------------------------------------------------------------------- KML

_KML_NUMBERS = ("width_m", "speed_limit_kmh", "radius_m", "daily_capacity_m3")
_KML_JSON = ("windows", "opening_hours")


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(elem, name: str):
    for child in elem:
        if _local(child.tag) == name:
            return child
    return None


def _children(elem, name: str) -> list:
    return [c for c in elem if _local(c.tag) == name]


def _kml_coords(elem) -> list[list[float]]:
    node = _child(elem, "coordinates")
    if node is None or not (node.text or "").strip():
        raise ValueError("missing <coordinates>")
    out = []
    for token in node.text.split():
        parts = token.split(",")
        if len(parts) < 2:
            raise ValueError(f"bad coordinate {token!r}")
        out.append([float(parts[0]), float(parts[1])])
    return out


def _kml_geometry(elem) -> dict[str, Any]:
    tag = _local(elem.tag)
    if tag == "Point":
        return {"type": "Point", "coordinates": _kml_coords(elem)[0]}
    if tag == "LineString":
        return {"type": "LineString", "coordinates": _kml_coords(elem)}
    if tag == "Polygon":
        outer = _child(elem, "outerBoundaryIs")
        ring = _child(outer, "LinearRing") if outer is not None else None
        if ring is None:
            raise ValueError("Polygon without outerBoundaryIs/LinearRing")
        rings = [_kml_coords(ring)]
        for inner in _children(elem, "innerBoundaryIs"):
            for lr in _children(inner, "LinearRing"):
                rings.append(_kml_coords(lr))
        return {"type": "Polygon", "coordinates": rings}
    if tag == "MultiGeometry":
        geoms = [_kml_geometry(g) for g in elem if _local(g.tag) in _KML_GEOMS]
        types = {g["type"] for g in geoms}
        if types == {"LineString"}:
            return {"type": "MultiLineString", "coordinates": [g["coordinates"] for g in geoms]}
        if types == {"Polygon"}:
            return {"type": "MultiPolygon", "coordinates": [g["coordinates"] for g in geoms]}
        raise ValueError(f"MultiGeometry mixing {sorted(types) or 'nothing'} is not supported")
    raise ValueError(f"unsupported KML geometry {tag}")


_KML_GEOMS = ("Point", "LineString", "Polygon", "MultiGeometry")


def read_kml(text: str) -> list[RawFeature]:
    from defusedxml import ElementTree
    from defusedxml.common import DefusedXmlException

    try:
        root = ElementTree.fromstring(text.encode("utf-8"))
    except (ElementTree.ParseError, DefusedXmlException) as exc:
        raise ZoneImportError([f"not a valid KML file: {exc}"]) from None
    out: list[RawFeature] = []
    for i, pm in enumerate(e for e in root.iter() if _local(e.tag) == "Placemark"):
        props: dict[str, Any] = {}
        name = _child(pm, "name")
        if name is not None and (name.text or "").strip():
            props["name"] = name.text.strip()
        ext = _child(pm, "ExtendedData")
        error = None
        if ext is not None:
            for item in ext.iter():
                key = item.get("name")
                if _local(item.tag) == "Data":
                    value_elem = _child(item, "value")
                    value = value_elem.text if value_elem is not None else None
                elif _local(item.tag) == "SimpleData":
                    value = item.text
                else:
                    continue
                if key is None or value is None:
                    continue
                value = value.strip()
                try:
                    props[key] = _kml_value(key, value)
                except ValueError as exc:
                    error = f"ExtendedData {key}: {exc}"
        geom_elem = next((c for c in pm if _local(c.tag) in _KML_GEOMS), None)
        geometry: Any = None
        if error is None and geom_elem is not None:
            try:
                geometry = _kml_geometry(geom_elem)
            except ValueError as exc:
                error = f"invalid coordinates: {exc}"
        if error:
            props["__error__"] = error
        fallback = pm.get("id") or props.get("name")
        out.append(RawFeature(i, props, geometry, fallback))
    if not out:
        raise ZoneImportError(["KML file holds no Placemark"])
    return out


def _kml_value(key: str, value: str) -> Any:
    if key in _KML_NUMBERS:
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    if key == "active":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{value!r} is not true/false")
    if key in _KML_JSON:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"{value!r} is not JSON (a list of windows)") from None
    return value


# ---------------------------------------------------------------------------- parsing


def _map_coords(coords: Any, fn: Callable[[np.ndarray, np.ndarray], tuple]) -> Any:
    """Apply fn(lon, lat) to every position of a GeoJSON coordinates tree (vectorised per
    innermost list)."""
    if isinstance(coords, list | tuple) and coords and isinstance(coords[0], int | float):
        lon, lat = fn(np.array([coords[0]], float), np.array([coords[1]], float))
        return [float(lon[0]), float(lat[0])]
    if (
        isinstance(coords, list | tuple)
        and coords
        and isinstance(coords[0], list | tuple)
        and coords[0]
        and isinstance(coords[0][0], int | float)
    ):
        arr = np.asarray([c[:2] for c in coords], dtype=np.float64)
        lon, lat = fn(arr[:, 0], arr[:, 1])
        return np.column_stack([lon, lat]).tolist()
    return [_map_coords(c, fn) for c in coords]


def convert_geometry(geometry: dict[str, Any], fn) -> dict[str, Any]:
    return {"type": geometry["type"], "coordinates": _map_coords(geometry["coordinates"], fn)}


def parse_zones(
    raw: list[RawFeature],
    *,
    crs: str = "wgs84",
    default_kind: str | None = None,
    defaults: dict[str, Any] | None = None,
    code: str | None = None,
    center: tuple[float, float] | None = None,
    max_distance_km: float | None = None,
    source: str = "",
) -> list[Zone]:
    """Validate every feature; raise one ZoneImportError naming all the bad ones."""
    crs = normalise_crs(crs)
    if code is not None and len(raw) != 1:
        raise ZoneImportError([f"--code given but the file holds {len(raw)} features"], source)
    seen: dict[str, int] = {}

    def zone_of(feature: RawFeature) -> Zone:
        props = dict(feature.properties)
        _apply_defaults(props, defaults or {}, default_kind)
        fallback = code or feature.fallback_code
        if "__error__" in props:
            raise ZoneError(props.pop("__error__"))
        geometry = feature.geometry
        if not isinstance(geometry, dict) or "coordinates" not in geometry:
            raise ZoneError("missing geometry (is it a GeoJSON Feature?)")
        _check_positions(geometry.get("coordinates"))
        if crs != "wgs84":
            geometry = convert_geometry(geometry, lambda lo, la: to_wgs84(lo, la, crs))
        zone = zone_from_properties(
            props,
            geometry,
            default_kind=default_kind,
            code=fallback,
            center=center,
            max_distance_km=max_distance_km,
        )
        if zone.code in seen:
            raise ZoneError(f"code {zone.code!r} also used by feature {seen[zone.code]}")
        seen[zone.code] = feature.index
        return zone

    return validate_all(raw, zone_of, source)


def validate_all(raw: list[RawFeature], convert: Callable[[RawFeature], Any], source: str) -> list:
    """`convert` every feature; one ZoneImportError naming every feature that raised a
    ZoneError (nothing is half-imported), or saying that there were none."""
    out, errors = [], []
    for feature in raw:
        try:
            out.append(convert(feature))
        except ZoneError as exc:
            errors.append(f"{feature.label()}: {exc}")
    if errors:
        raise ZoneImportError(errors, source)
    if not out:
        raise ZoneImportError(["the file holds no features"], source)
    return out


def _apply_defaults(props: dict[str, Any], defaults: dict[str, Any], kind: str | None) -> None:
    """Fill attributes given on the command line (e.g. --width-m) where the kind takes them
    and the feature does not set them."""
    try:
        kind = normalise_kind(props.get("kind", kind))
    except ZoneError:
        return  # reported by validation
    for key, value in defaults.items():
        if key not in props and key in ATTRIBUTES[kind]:
            props[key] = value


def read_raw_features(path: str | Path, fmt: str = "geojson") -> list[RawFeature]:
    """The raw features of a file (UTF-8, BOM allowed); errors name the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ZoneImportError([f"cannot read: {exc.strerror or exc}"], str(path)) from None
    except UnicodeDecodeError:
        raise ZoneImportError(["not UTF-8 text"], str(path)) from None
    try:
        return {"geojson": read_geojson, "gpx": read_gpx, "kml": read_kml}[fmt](text)
    except ZoneImportError as exc:
        raise ZoneImportError(exc.errors, str(path)) from None


def read_zones_file(
    path: str | Path,
    *,
    fmt: str | None = None,
    crs: str = "wgs84",
    default_kind: str | None = None,
    defaults: dict[str, Any] | None = None,
    code: str | None = None,
    center: tuple[float, float] | None = None,
    max_distance_km: float | None = None,
) -> list[Zone]:
    path = Path(path)
    fmt = fmt or detect_format(path)
    raw = read_raw_features(path, fmt)
    if fmt in ("gpx",) and default_kind is None:
        default_kind = "route"
    return parse_zones(
        raw,
        crs=crs,
        default_kind=default_kind,
        defaults=defaults,
        code=code,
        center=center,
        max_distance_km=max_distance_km,
        source=str(path),
    )


def export_geojson(zones: list[Zone], crs: str = "wgs84") -> dict[str, Any]:
    """FeatureCollection of zones in the import schema (re-importable with the same --crs)."""
    crs = normalise_crs(crs)
    features = []
    for zone in zones:
        feature = zone.to_feature()
        if crs != "wgs84":
            feature["geometry"] = convert_geometry(
                zone.geometry, lambda lo, la: from_wgs84(lo, la, crs)
            )
        features.append(feature)
    return {"type": "FeatureCollection", "features": features}
