-- The offline base layer: the city's streets (and water, green areas) as line and polygon
-- features with a class, drawn by the dashboard's maps when no tile server is configured
-- (web.tile_url empty) and offered beside the tiles otherwise. Drawing only: the rules never
-- read it (road speed classes that matter to them are `speed` zones). Imported with
-- `muck zones import-basemap FILE` or installed by the simulated city (geofence/basemap.py);
-- an import replaces the features of its `source`, in one transaction.

CREATE TABLE geofence_basemap (
    id          bigserial PRIMARY KEY,
    source      text NOT NULL CHECK (source <> ''),
    class       text NOT NULL CHECK (class <> ''),
    name        text,
    -- GeoJSON LineString / MultiLineString (roads, rail, rivers) or Polygon / MultiPolygon
    -- (water, green, built-up areas), WGS-84.
    geometry    jsonb NOT NULL,
    min_lon     double precision NOT NULL,
    min_lat     double precision NOT NULL,
    max_lon     double precision NOT NULL,
    max_lat     double precision NOT NULL,
    imported_at timestamptz NOT NULL DEFAULT now()
);

-- The web map asks for the features whose bounding box meets its viewport (web/api.py
-- `basemap`, geofence.basemap.features_in): the built-in box type, no PostGIS.
CREATE INDEX geofence_basemap_bbox_idx ON geofence_basemap
    USING gist (box(point(min_lon, min_lat), point(max_lon, max_lat)));
CREATE INDEX geofence_basemap_source_idx ON geofence_basemap (source);
