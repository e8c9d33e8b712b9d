"""The offline base layer: streets, water and green areas drawn under the zones when no tile
server is configured (docs/web.md "Base layer").

Features come from GeoJSON (`muck zones import-basemap FILE`, or the simulated city's road
network) with a `class` (CLASSES) and an optional `name`; other properties are ignored (OSM
exports carry many). The file is validated as a whole like a zone file: every bad feature is
named by index and code/name, and nothing is stored. An import replaces the features of the
same `source`, in one transaction.

`features_in` answers the map: the features of the classes drawn at a zoom (main roads only
when zoomed out) whose box meets the viewport, simplified to half a pixel at that zoom, at
most `limit` of them (the most important classes first), so that an answer stays small
whatever the size of the city.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from psycopg2.extras import execute_values

from geofence.coords import normalise_crs, to_wgs84
from geofence.io import RawFeature, convert_geometry, read_raw_features, validate_all
from geofence.model import DISTRICT, ZoneError, check_distance, validate_geometry

# Line classes: the road classes of geofence.model.ROAD_CLASSES (expressway, urban_expressway,
# other = an ordinary road), arterial roads, paths, railways and rivers; area classes: water,
# green (parks), built-up areas. In drawing order from the top: the first are drawn last.
LINE_CLASSES = ("expressway", "urban_expressway", "arterial", "other", "path", "rail", "river")
AREA_CLASSES = ("water", "green", "built_up")
CLASSES = LINE_CLASSES + AREA_CLASSES
# The zoom from which a class is drawn: a whole city shows its main roads and water, a
# district its streets, a few blocks the paths.
MIN_ZOOM = {
    "expressway": 0,
    "urban_expressway": 0,
    "water": 0,
    "river": 8,
    "arterial": 10,
    "rail": 11,
    "green": 11,
    "built_up": 11,
    "other": 12,
    "path": 15,
}
# Importance, for the limit: what is left out of a capped answer is the least important.
PRIORITY = (
    "expressway",
    "urban_expressway",
    "water",
    "arterial",
    "river",
    "other",
    "rail",
    "green",
    "built_up",
    "path",
)


@dataclass(frozen=True)
class BasemapFeature:
    cls: str
    name: str | None
    geometry: dict[str, Any]  # GeoJSON, WGS-84
    bounds: tuple[float, float, float, float]  # min lon, min lat, max lon, max lat


def _feature(
    raw: RawFeature, crs: str, center: tuple[float, float] | None, max_distance_km: float | None
) -> BasemapFeature:
    props = raw.properties if isinstance(raw.properties, dict) else {}
    cls = props.get("class")
    if cls is None:
        raise ZoneError(f"missing class (one of {', '.join(CLASSES)})")
    if cls not in CLASSES:
        raise ZoneError(f"unknown class {cls!r} (one of {', '.join(CLASSES)})")
    name = props.get("name")
    if name is not None and not isinstance(name, str):
        raise ZoneError(f"name must be text, got {name!r}")
    geometry = raw.geometry
    if not isinstance(geometry, dict) or "coordinates" not in geometry:
        raise ZoneError("missing geometry (is it a GeoJSON Feature?)")
    lines = cls in LINE_CLASSES
    allowed = ("LineString", "MultiLineString") if lines else ("Polygon", "MultiPolygon")
    if geometry.get("type") not in allowed:
        raise ZoneError(
            f"class {cls!r} needs a {' or '.join(allowed)} geometry, got {geometry.get('type')!r}"
        )
    if crs != "wgs84":
        from geofence.model import _check_positions

        _check_positions(geometry.get("coordinates"))
        geometry = convert_geometry(geometry, lambda lo, la: to_wgs84(lo, la, crs))
    # The zones' geometry checks: positions, a line of some length, a valid polygon.
    geom = validate_geometry("route" if lines else DISTRICT, geometry, {})
    check_distance(center, max_distance_km, geom, "feature")
    return BasemapFeature(cls, name, shapely.geometry.mapping(geom), tuple(geom.bounds))


def parse_basemap(
    raw: list[RawFeature],
    *,
    crs: str = "wgs84",
    center: tuple[float, float] | None = None,
    max_distance_km: float | None = None,
    source: str = "",
) -> list[BasemapFeature]:
    """Validate every feature; raise one ZoneImportError naming all the bad ones."""
    crs = normalise_crs(crs)
    return validate_all(raw, lambda item: _feature(item, crs, center, max_distance_km), source)


def read_basemap_file(path: str | Path, **kwargs: Any) -> list[BasemapFeature]:
    """A GeoJSON file of base-layer features (`parse_basemap`'s keyword arguments)."""
    return parse_basemap(read_raw_features(path), source=str(path), **kwargs)


def replace_basemap(conn, features: list[BasemapFeature], source: str) -> dict[str, int]:
    """Replace the features of `source` with these, in one transaction (committed)."""
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM geofence_basemap WHERE source = %s", (source,))
            deleted = cur.rowcount
            execute_values(
                cur,
                """INSERT INTO geofence_basemap
                       (source, class, name, geometry, min_lon, min_lat, max_lon, max_lat)
                   VALUES %s""",
                [(source, f.cls, f.name, json.dumps(f.geometry), *f.bounds) for f in features],
                page_size=1000,
            )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return {"deleted": deleted, "inserted": len(features)}


def classes_at(zoom: int) -> list[str]:
    """The classes drawn at `zoom`, most important first."""
    return [c for c in PRIORITY if MIN_ZOOM[c] <= zoom]


def tolerance_deg(zoom: int) -> float:
    """Half a pixel of a 256-pixel Web-Mercator tile at `zoom`, in degrees of longitude."""
    return 360.0 / (256 * 2**zoom) / 2


def features_in(
    conn, bbox: tuple[float, float, float, float], zoom: int, *, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """GeoJSON features (WGS-84) meeting `bbox` (min lon, min lat, max lon, max lat) drawn at
    `zoom`, simplified for it; at most `limit`, and whether some were left out."""
    classes = classes_at(zoom)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT class, name, geometry::text FROM geofence_basemap
               WHERE box(point(min_lon, min_lat), point(max_lon, max_lat))
                     && box(point(%(w)s, %(s)s), point(%(e)s, %(n)s))
                 AND class = ANY(%(classes)s)
               ORDER BY array_position(%(classes)s, class), id
               LIMIT %(limit)s""",
            {
                "w": bbox[0],
                "s": bbox[1],
                "e": bbox[2],
                "n": bbox[3],
                "classes": classes,
                "limit": limit + 1,
            },
        )
        rows = cur.fetchall()
    conn.rollback()
    truncated = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return [], truncated
    geoms = shapely.from_geojson(np.array([r[2] for r in rows], dtype=object))
    simple = shapely.simplify(geoms, tolerance_deg(zoom), preserve_topology=True)
    simple = shapely.set_precision(simple, 1e-6)  # 0.1 m: no 17-digit coordinates on the wire
    texts = shapely.to_geojson(simple, indent=None)
    features = [
        {
            "type": "Feature",
            "geometry": json.loads(text),
            "properties": {"class": cls, "name": name},
        }
        for (cls, name, _), text in zip(rows, texts, strict=True)
    ]
    return features, truncated
