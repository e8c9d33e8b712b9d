"""WGS-84 <-> GCJ-02 <-> BD-09 conversions."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Geod

from geofence import coords

GEOD = Geod(ellps="WGS84")

# Published test vectors of the public algorithm (eviltransform and its ports): WGS -> GCJ.
VECTORS = [
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597)),  # Shanghai
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766)),  # Shenzhen
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069)),  # Beijing
]


def _metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    return GEOD.inv(lon1, lat1, lon2, lat2)[2]


@pytest.mark.parametrize(("wgs", "gcj"), VECTORS)
def test_published_vectors(wgs, gcj):
    lon, lat = coords.wgs84_to_gcj02(*wgs)
    assert float(lon) == pytest.approx(gcj[0], abs=1e-9)
    assert float(lat) == pytest.approx(gcj[1], abs=1e-9)
    back = coords.gcj02_to_wgs84(*gcj)
    assert _metres(back[0], back[1], *wgs) < 0.01


def _china_grid():
    lon, lat = np.meshgrid(np.linspace(75, 134, 40), np.linspace(18, 53, 30))
    return lon.ravel(), lat.ravel()


def test_gcj_round_trip_across_china_within_half_a_metre():
    lon, lat = _china_grid()
    glon, glat = coords.wgs84_to_gcj02(lon, lat)
    offset = _metres(lon, lat, glon, glat)
    assert offset.min() > 1.0  # the offset is really applied everywhere inside China
    assert offset.max() < 1000.0
    wlon, wlat = coords.gcj02_to_wgs84(glon, glat)
    err = _metres(lon, lat, wlon, wlat)
    assert err.max() < 0.5
    assert err.max() < 1e-3  # the iterative inverse is in fact far better


def test_bd09_round_trip_and_offset():
    lon, lat = _china_grid()
    blon, blat = coords.wgs84_to_bd09(lon, lat)
    # BD-09 sits a further ~0.0065/0.006 degrees off GCJ-02: several hundred metres
    glon, glat = coords.wgs84_to_gcj02(lon, lat)
    extra = _metres(glon, glat, blon, blat)
    assert 300 < extra.min() and extra.max() < 1500
    wlon, wlat = coords.bd09_to_wgs84(blon, blat)
    assert _metres(lon, lat, wlon, wlat).max() < 0.5
    g2lon, g2lat = coords.bd09_to_gcj02(*coords.gcj02_to_bd09(glon, glat))
    assert _metres(glon, glat, g2lon, g2lat).max() < 0.01


@pytest.mark.parametrize(
    ("lon", "lat"),
    [(-104.9903, 39.7392), (2.3522, 48.8566), (153.0251, -27.4698), (-43.1729, -22.9068)],
)
def test_identity_outside_china(lon, lat):
    assert coords.out_of_china(lon, lat)
    for fwd in (coords.wgs84_to_gcj02, coords.gcj02_to_wgs84):
        out = fwd(lon, lat)
        assert float(out[0]) == lon and float(out[1]) == lat


def test_to_and_from_wgs84_by_name_and_bad_name():
    lon, lat = np.array([114.06]), np.array([22.55])
    for crs in ("wgs84", "gcj02", "bd09", "GCJ-02", "baidu"):
        back = coords.to_wgs84(*coords.from_wgs84(lon, lat, crs), crs)
        assert _metres(lon, lat, *back)[0] < 0.01
    with pytest.raises(ValueError, match="unknown coordinate system"):
        coords.to_wgs84(lon, lat, "utm")


def test_non_finite_input_does_not_raise():
    lon = np.array([np.nan, 114.0, np.inf])
    lat = np.array([22.0, np.nan, 22.0])
    out = coords.gcj02_to_wgs84(lon, lat)
    assert out[0].shape == (3,)
    assert np.isnan(out[0][0])
