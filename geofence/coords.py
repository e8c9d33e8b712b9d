"""WGS-84 <-> GCJ-02 <-> BD-09, vectorised over numpy arrays.

GCJ-02 (AMap, Tencent, Google China tiles) is WGS-84 plus an obfuscating offset of a few
hundred metres inside China; BD-09 (Baidu) is a further transform of GCJ-02. There is no
maintained, vectorised Python library for this, so this module implements the public
algorithm (the one published by eviltransform and its ports, test vectors in
tests/geofence/test_coords.py). The forward transforms are closed formulas; the inverses
are computed by fixed-point iteration to 1e-10 degree (about 0.01 mm), not by the usual
one-step approximation (which is off by up to a couple of metres).

Outside China (the customary rough bounding box, `out_of_china`) GCJ-02 is the identity;
BD-09 is then defined on top of that identity, as Baidu does.

Every function takes and returns float64 arrays (scalars are accepted) as (lon, lat).
Non-finite input stays non-finite; nothing raises on odd values.
"""

from __future__ import annotations

import numpy as np

CRS_NAMES = ("wgs84", "gcj02", "bd09")

_A = 6378245.0  # Krasovsky 1940 semi-major axis used by the algorithm
_EE = 0.00669342162296594323  # its eccentricity squared
_X_PI = np.pi * 3000.0 / 180.0
_TOL_DEG = 1e-10
_MAX_ITER = 30


def _arrays(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    lon, lat = np.broadcast_arrays(lon, lat)
    return lon, lat


def out_of_china(lon, lat) -> np.ndarray:
    """True where the GCJ-02 offset is not applied (outside China's rough bounding box)."""
    lon, lat = _arrays(lon, lat)
    with np.errstate(invalid="ignore"):
        inside = (lon >= 72.004) & (lon <= 137.8347) & (lat >= 0.8293) & (lat <= 55.8271)
    return ~inside


def _delta(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GCJ-02 offset (degrees) at a WGS-84 position, ignoring the China test."""
    x = lon - 105.0
    y = lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    pi = np.pi
    common = (20.0 * np.sin(6.0 * x * pi) + 20.0 * np.sin(2.0 * x * pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
    dlat = dlat + common
    dlat = dlat + (20.0 * np.sin(y * pi) + 40.0 * np.sin(y / 3.0 * pi)) * 2.0 / 3.0
    dlat = dlat + (160.0 * np.sin(y / 12.0 * pi) + 320.0 * np.sin(y * pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
    dlon = dlon + common
    dlon = dlon + (20.0 * np.sin(x * pi) + 40.0 * np.sin(x / 3.0 * pi)) * 2.0 / 3.0
    dlon = dlon + (150.0 * np.sin(x / 12.0 * pi) + 300.0 * np.sin(x / 30.0 * pi)) * 2.0 / 3.0
    radlat = lat / 180.0 * pi
    magic = np.sin(radlat)
    magic = 1.0 - _EE * magic * magic
    sqrtmagic = np.sqrt(magic)
    dlat = (dlat * 180.0) / ((_A * (1.0 - _EE)) / (magic * sqrtmagic) * pi)
    dlon = (dlon * 180.0) / (_A / sqrtmagic * np.cos(radlat) * pi)
    return dlon, dlat


def wgs84_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    lon, lat = _arrays(lon, lat)
    with np.errstate(invalid="ignore"):
        dlon, dlat = _delta(lon, lat)
        outside = out_of_china(lon, lat)
    return np.where(outside, lon, lon + dlon), np.where(outside, lat, lat + dlat)


def gcj02_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    x, y = _arrays(lon, lat)
    z = np.sqrt(x * x + y * y) + 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) + 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def _bd09_to_gcj02_approx(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    x = lon - 0.0065
    y = lat - 0.006
    z = np.sqrt(x * x + y * y) - 0.00002 * np.sin(y * _X_PI)
    theta = np.arctan2(y, x) - 0.000003 * np.cos(x * _X_PI)
    return z * np.cos(theta), z * np.sin(theta)


def _invert(forward, lon: np.ndarray, lat: np.ndarray, guess) -> tuple[np.ndarray, np.ndarray]:
    """Solve forward(w) = (lon, lat) for w by fixed-point iteration (the offsets vary slowly,
    so each step divides the error by about 1e4)."""
    wlon, wlat = guess
    wlon = np.array(wlon, dtype=np.float64, copy=True)
    wlat = np.array(wlat, dtype=np.float64, copy=True)
    with np.errstate(invalid="ignore"):
        for _ in range(_MAX_ITER):
            flon, flat = forward(wlon, wlat)
            elon = flon - lon
            elat = flat - lat
            wlon -= elon
            wlat -= elat
            err = np.maximum(np.abs(elon), np.abs(elat))
            if not np.any(err > _TOL_DEG):  # NaN compares False: non-finite input stops too
                break
    return wlon, wlat


def gcj02_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Exact inverse of `wgs84_to_gcj02` (iterative, to about 1e-10 degree)."""
    lon, lat = _arrays(lon, lat)
    return _invert(wgs84_to_gcj02, lon, lat, (lon, lat))


def bd09_to_gcj02(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Exact inverse of `gcj02_to_bd09` (iterative, starting from the usual approximation)."""
    lon, lat = _arrays(lon, lat)
    return _invert(gcj02_to_bd09, lon, lat, _bd09_to_gcj02_approx(lon, lat))


def wgs84_to_bd09(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon, lat) -> tuple[np.ndarray, np.ndarray]:
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))


def to_wgs84(lon, lat, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert from `crs` ("wgs84", "gcj02" or "bd09") to WGS-84."""
    crs = normalise_crs(crs)
    if crs == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if crs == "bd09":
        return bd09_to_wgs84(lon, lat)
    lon, lat = _arrays(lon, lat)
    return lon.copy(), lat.copy()


def from_wgs84(lon, lat, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """Convert WGS-84 to `crs` ("wgs84", "gcj02" or "bd09"), e.g. for display on AMap."""
    crs = normalise_crs(crs)
    if crs == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    if crs == "bd09":
        return wgs84_to_bd09(lon, lat)
    lon, lat = _arrays(lon, lat)
    return lon.copy(), lat.copy()


_ALIASES = {
    "wgs84": "wgs84",
    "wgs-84": "wgs84",
    "epsg:4326": "wgs84",
    "gcj02": "gcj02",
    "gcj-02": "gcj02",
    "amap": "gcj02",
    "bd09": "bd09",
    "bd-09": "bd09",
    "baidu": "bd09",
}


def normalise_crs(crs: str) -> str:
    try:
        return _ALIASES[crs.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown coordinate system {crs!r}; expected wgs84, gcj02 or bd09"
        ) from None
