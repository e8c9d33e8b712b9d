-- Geofence zones: construction sites, disposal sites, approved routes, restricted zones and
-- speed zones. PostGIS is not required: geometry is stored as GeoJSON (WGS-84 lon/lat) and
-- evaluated in memory (geofence/index.py). See docs/geofence.md for the attribute schema.

CREATE TABLE geofence_zones (
    id          bigserial PRIMARY KEY,
    -- Stable text code used by permits and imports (upsert key), e.g. 'SITE-001'.
    code        text NOT NULL UNIQUE CHECK (code <> ''),
    kind        text NOT NULL
                CHECK (kind IN ('site', 'disposal', 'route', 'restricted', 'speed')),
    name        text NOT NULL,
    district    text,
    -- Local dates (city time zone), both inclusive; NULL = unbounded.
    valid_from  date,
    valid_to    date,
    active      boolean NOT NULL DEFAULT true,
    -- GeoJSON geometry in WGS-84 (converted from GCJ-02 / BD-09 on import).
    geometry    jsonb NOT NULL,
    -- Kind-specific attributes (width_m, speed_limit_kmh, windows, opening_hours, ...).
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_from IS NULL OR valid_to >= valid_from)
);
CREATE INDEX geofence_zones_kind_idx ON geofence_zones (kind);
CREATE INDEX geofence_zones_district_idx ON geofence_zones (district);

-- Extra ban days (holidays, exam days) for restricted zones. zone_id NULL = every
-- restricted zone. start_time/end_time NULL = the whole local day; end_time <= start_time
-- means the ban runs past midnight into the next day.
CREATE TABLE geofence_ban_days (
    id          bigserial PRIMARY KEY,
    day         date NOT NULL,
    zone_id     bigint REFERENCES geofence_zones (id) ON DELETE CASCADE,
    start_time  time,
    end_time    time,
    reason      text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK ((start_time IS NULL) = (end_time IS NULL))
);
CREATE INDEX geofence_ban_days_day_idx ON geofence_ban_days (day);

-- Catalogue version: bumped (transactionally) by any change to zones or ban days, so that
-- evaluators can poll one row cheaply and reload only when something changed. The value
-- comes from a sequence so it never repeats, even after the tables are truncated.
CREATE SEQUENCE geofence_version_seq;
CREATE TABLE geofence_version (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version     bigint NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION geofence_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v bigint := nextval('geofence_version_seq');
BEGIN
    INSERT INTO geofence_version (id, version, changed_at) VALUES (1, v, now())
    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, changed_at = EXCLUDED.changed_at;
    PERFORM pg_notify('geofence_changed', v::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER geofence_zones_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON geofence_zones
    FOR EACH STATEMENT EXECUTE FUNCTION geofence_bump_version();
CREATE TRIGGER geofence_ban_days_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON geofence_ban_days
    FOR EACH STATEMENT EXECUTE FUNCTION geofence_bump_version();
