"""Setting a city up from its zones: the centre and metric projection a new city needs before
its zones can be imported (`muck city init --from-zones FILE`).

The defaults are the simulated city's (Shenzhen); a bureau elsewhere would otherwise have
every zone refused as too far from the centre. The proposal is the centre of the zones'
bounding box and the CGCS2000 3-degree Gauss-Krüger zone (EPSG:4534-4554, the national
survey grid) whose central meridian is nearest, so that distances agree with the bureau's
own survey maps.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyproj
import shapely

from geofence.model import Zone, _distance_km

# CGCS2000 / 3-degree Gauss-Kruger CM 75E is EPSG:4534, CM 78E 4535, ... CM 135E 4554.
_GK_FIRST_EPSG, _GK_FIRST_CM, _GK_LAST_CM = 4534, 75, 135


@dataclass(frozen=True)
class CityProposal:
    center_lon: float
    center_lat: float
    projection: str  # "" for the default transverse Mercator on the centre
    projection_name: str
    farthest_km: float  # from the centre to the farthest zone corner

    def settings(self) -> dict[str, object]:
        return {
            "center_lon": self.center_lon,
            "center_lat": self.center_lat,
            "projection": self.projection,
        }


def gauss_kruger_zone(lon: float) -> str:
    """The CGCS2000 3-degree Gauss-Krüger zone for a longitude in China ('' outside)."""
    cm = round(lon / 3) * 3
    if not _GK_FIRST_CM <= cm <= _GK_LAST_CM:
        return ""
    return f"EPSG:{_GK_FIRST_EPSG + (cm - _GK_FIRST_CM) // 3}"


def propose_city(zones: list[Zone]) -> CityProposal:
    """The centre and projection for a city holding `zones` (WGS-84)."""
    if not zones:
        raise ValueError("the file holds no zones")
    geoms = [shapely.geometry.shape(z.geometry) for z in zones]
    minx, miny, maxx, maxy = shapely.GeometryCollection(geoms).bounds
    lon, lat = round((minx + maxx) / 2, 4), round((miny + maxy) / 2, 4)
    projection = gauss_kruger_zone(lon)
    name = pyproj.CRS.from_user_input(projection).name if projection else "transverse Mercator"
    farthest = max(_distance_km((lon, lat), g) for g in geoms)
    return CityProposal(lon, lat, projection, name, round(farthest, 1))
