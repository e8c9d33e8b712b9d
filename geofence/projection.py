"""The city's metric projection (WGS-84 lon/lat -> metres), vectorised with pyproj."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyproj
import shapely


def city_crs(city: dict[str, Any]) -> pyproj.CRS:
    """`city.projection` if set, else a transverse Mercator centred on the city centre.

    The default uses PROJ's `+approx` (Evenden/Snyder) transverse Mercator: it is about twice
    as fast as the exact Poder/Engsager series and differs from it by under 2 micrometres
    within 3 degrees of the centre, 0.3 mm at 6 degrees (zones farther than
    geofence.max_zone_distance_km are refused anyway). Its scale error at 300 km from the
    central meridian is 0.11 %, i.e. 0.3 m on a 250 m distance.
    """
    projection = str(city.get("projection") or "").strip()
    if projection:
        crs = pyproj.CRS.from_user_input(projection)
        if not crs.is_projected:
            raise ValueError(f"city.projection {projection!r} is not a projected (metric) CRS")
        return crs
    lon = float(city["center_lon"])
    lat = float(city["center_lat"])
    return pyproj.CRS.from_proj4(
        f"+proj=tmerc +approx +lat_0={lat!r} +lon_0={lon!r} +k=1 +x_0=0 +y_0=0 "
        "+ellps=WGS84 +units=m +no_defs"
    )


class Projector:
    """Forward (and inverse) projection of numpy arrays and shapely geometries."""

    def __init__(self, city: dict[str, Any]) -> None:
        self.crs = city_crs(city)
        self._fwd = pyproj.Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)
        self._inv = pyproj.Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)

    def forward(self, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, y = self._fwd.transform(
            np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
        )
        return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)

    def inverse(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lon, lat = self._inv.transform(np.asarray(x, np.float64), np.asarray(y, np.float64))
        return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)

    def geometry(self, geom: shapely.Geometry) -> shapely.Geometry:
        def _tx(xy: np.ndarray) -> np.ndarray:
            x, y = self.forward(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return shapely.transform(geom, _tx)
