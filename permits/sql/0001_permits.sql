-- Disposal permits (核准): company, trucks, origin site, disposal sites, routes, operating
-- hours and validity. See docs/permits-and-black-trucks.md.

CREATE TABLE permits (
    id               bigserial PRIMARY KEY,
    -- The permit number as printed (e.g. 深建渣准〔2026〕0123号); the upsert key of imports.
    number           text NOT NULL UNIQUE CHECK (number <> ''),
    company_id       bigint NOT NULL REFERENCES companies (id),
    -- Zones are referenced by their stable code (geofence_zones.code). A zone a permit
    -- refers to cannot be deleted (deactivate it instead); kinds are checked on import.
    origin_site      text NOT NULL REFERENCES geofence_zones (code) ON UPDATE CASCADE,
    -- Local dates (city time zone), both inclusive: valid from 00:00 on valid_from until
    -- 24:00 on valid_to.
    valid_from       date NOT NULL,
    valid_to         date NOT NULL,
    -- Permitted operating hours: a list of windows {"days", "start", "end"} in local time
    -- (geofence window syntax; an end not after the start crosses midnight). [] = any time.
    operating_hours  jsonb NOT NULL DEFAULT '[]'::jsonb,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'suspended', 'revoked')),
    status_reason    text,
    status_changed_at timestamptz,
    authority        text,
    note             text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to >= valid_from),
    CHECK (jsonb_typeof(operating_hours) = 'array')
);
CREATE INDEX permits_company_idx ON permits (company_id);
CREATE INDEX permits_validity_idx ON permits (valid_to, valid_from);

-- Trucks a permit covers.
CREATE TABLE permit_trucks (
    permit_id  bigint NOT NULL REFERENCES permits (id) ON DELETE CASCADE,
    truck_id   bigint NOT NULL REFERENCES trucks (id),
    PRIMARY KEY (permit_id, truck_id)
);
CREATE INDEX permit_trucks_truck_idx ON permit_trucks (truck_id);

-- Approved disposal sites and routes of a permit, in the order the permit lists them.
CREATE TABLE permit_zones (
    permit_id  bigint NOT NULL REFERENCES permits (id) ON DELETE CASCADE,
    role       text NOT NULL CHECK (role IN ('disposal', 'route')),
    zone_code  text NOT NULL REFERENCES geofence_zones (code) ON UPDATE CASCADE,
    position   smallint NOT NULL,
    PRIMARY KEY (permit_id, role, zone_code)
);
CREATE INDEX permit_zones_zone_idx ON permit_zones (zone_code);

-- Catalogue version, bumped in the same transaction as any change to the three tables, so
-- that PermitCatalog.refresh_if_changed costs one primary-key read when nothing changed.
CREATE SEQUENCE permit_version_seq;
CREATE TABLE permit_version (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    version     bigint NOT NULL,
    changed_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION permit_bump_version() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    v bigint := nextval('permit_version_seq');
BEGIN
    INSERT INTO permit_version (id, version, changed_at) VALUES (1, v, now())
    ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, changed_at = EXCLUDED.changed_at;
    PERFORM pg_notify('permits_changed', v::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER permits_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON permits
    FOR EACH STATEMENT EXECUTE FUNCTION permit_bump_version();
CREATE TRIGGER permit_trucks_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON permit_trucks
    FOR EACH STATEMENT EXECUTE FUNCTION permit_bump_version();
CREATE TRIGGER permit_zones_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON permit_zones
    FOR EACH STATEMENT EXECUTE FUNCTION permit_bump_version();
