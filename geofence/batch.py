"""The fixes of one evaluation, projected once for both lookups (the area grid and the route
grids), and the gather both lookups use to pair fixes with their candidate entries.

Fixes are projected once per batch into the city's metric projection (pyproj, vectorised).
Fixes outside the lon/lat bounding box of all zones are never projected: they are outside
everything (this also keeps far-away fixes away from the projection's distorted edges).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from geofence.projection import Projector


@dataclass
class Batch:
    n: int
    x: np.ndarray  # projected metres, NaN where not projected
    y: np.ndarray
    projected: np.ndarray  # bool: inside the lon/lat box of some zone and finite


def as_float(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    return arr


def project(
    projector: Projector, boxes: Sequence[tuple[float, float, float, float]], lon: Any, lat: Any
) -> Batch:
    """Project the fixes inside the union of the lon/lat `boxes` (one per lookup that has
    zones); the others stay NaN and unprojected."""
    lon = as_float(lon, "lon")
    lat = as_float(lat, "lat")
    if lon.shape != lat.shape:
        raise ValueError(f"lon and lat differ in length ({lon.size} vs {lat.size})")
    n = lon.size
    if not boxes or n == 0:
        nan = np.full(n, np.nan)
        return Batch(n, nan, nan.copy(), np.zeros(n, dtype=bool))
    box = np.array(boxes)
    lo0, la0 = box[:, 0].min(), box[:, 1].min()
    lo1, la1 = box[:, 2].max(), box[:, 3].max()
    with np.errstate(invalid="ignore"):
        ok = (lon >= lo0) & (lon <= lo1) & (lat >= la0) & (lat <= la1)
    if ok.all():
        x, y = projector.forward(lon, lat)
    else:
        x = np.full(n, np.nan)
        y = np.full(n, np.nan)
        if ok.any():
            x[ok], y[ok] = projector.forward(lon[ok], lat[ok])
    with np.errstate(invalid="ignore"):
        ok &= np.isfinite(x) & np.isfinite(y)
    return Batch(n, x, y, ok)


def expand(fix: np.ndarray, start: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Repeat each fix `count` times, with positions start..start+count-1 in the entries."""
    total = int(count.sum())
    rep_fix = np.repeat(fix, count)
    offset = np.repeat(start - (np.cumsum(count) - count), count)
    pos = np.arange(total, dtype=np.int64) + offset
    return rep_fix, pos
