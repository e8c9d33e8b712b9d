-- Administrative districts (行政区): boundaries the dashboard filters by. Kept apart from
-- geofence_zones on purpose: the rules never test fixes against districts, so they stay out
-- of the in-memory index (a district covers a large part of the city and would enlarge its
-- grid for nothing), and a district is identified by its 6-digit administrative division
-- code (行政区划代码, GB/T 2260), not by a zone code. Imported through the same files and
-- validation as zones (features of kind `district`, see geofence/io.py).

CREATE TABLE geofence_districts (
    id          bigserial PRIMARY KEY,
    code        text NOT NULL UNIQUE CHECK (code ~ '^[0-9]{6}$'),
    name        text NOT NULL CHECK (name <> ''),
    active      boolean NOT NULL DEFAULT true,
    -- GeoJSON Polygon or MultiPolygon, WGS-84.
    geometry    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The same boundaries as PostgreSQL's built-in `polygon` type, one row per ring (ring 0 the
-- outer ring of a part, ring > 0 its holes), so that "which district is this point in" is
-- answered inside the database (GiST on the rings' boxes, then polygon @> point) without
-- PostGIS. Written by geofence.store.upsert_districts with the district.
CREATE TABLE geofence_district_rings (
    district_id  bigint NOT NULL REFERENCES geofence_districts (id) ON DELETE CASCADE,
    part         integer NOT NULL,
    ring         integer NOT NULL,
    shape        polygon NOT NULL,
    PRIMARY KEY (district_id, part, ring)
);
CREATE INDEX geofence_district_rings_shape_idx ON geofence_district_rings USING gist (shape);

-- The code of the active district containing (lon, lat), or NULL. Districts should not
-- overlap; if they do, the lowest code wins so that the answer is stable.
CREATE FUNCTION geofence_district_at(lon double precision, lat double precision)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT d.code
    FROM geofence_district_rings r JOIN geofence_districts d ON d.id = r.district_id
    WHERE r.ring = 0 AND d.active AND r.shape @> point(lon, lat)
      AND NOT EXISTS (SELECT 1 FROM geofence_district_rings h
                      WHERE h.district_id = r.district_id AND h.part = r.part AND h.ring > 0
                        AND h.shape @> point(lon, lat))
    ORDER BY d.code
    LIMIT 1
$$;
