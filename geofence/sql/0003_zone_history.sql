-- Every version of every zone, so that evidence (evidence/, its consumer) shows a zone as it
-- was when a violation happened, not as it was edited since. A row is in force from
-- `recorded_from` until `recorded_to` (NULL: still in force); a deleted zone's last row is
-- closed. Written at commit by a deferred trigger, so an import that rewrites a zone several
-- times in one transaction leaves one version, and one that changes nothing leaves none.
CREATE TABLE geofence_zone_history (
    id             bigserial PRIMARY KEY,
    zone_id        bigint NOT NULL,
    code           text NOT NULL,
    kind           text NOT NULL,
    name           text NOT NULL,
    district       text,
    valid_from     date,
    valid_to       date,
    active         boolean NOT NULL,
    geometry       jsonb NOT NULL,
    attributes     jsonb NOT NULL,
    recorded_from  timestamptz NOT NULL,
    recorded_to    timestamptz,
    CHECK (recorded_to IS NULL OR recorded_to >= recorded_from)
);
-- evidence/content.py: "the version of zone <code> in force at <time>".
CREATE INDEX geofence_zone_history_code_idx ON geofence_zone_history (code, recorded_from);
CREATE UNIQUE INDEX geofence_zone_history_current_idx ON geofence_zone_history (zone_id)
    WHERE recorded_to IS NULL;

-- Zones that exist before versioning: their history starts with what they are now, in force
-- since always (nothing older is known).
INSERT INTO geofence_zone_history (zone_id, code, kind, name, district, valid_from, valid_to,
                                   active, geometry, attributes, recorded_from)
SELECT id, code, kind, name, district, valid_from, valid_to, active, geometry, attributes,
       '-infinity'
FROM geofence_zones;

CREATE FUNCTION geofence_zone_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    zid bigint := COALESCE(NEW.id, OLD.id);
    z geofence_zones%ROWTYPE;
    cur geofence_zone_history%ROWTYPE;
BEGIN
    SELECT * INTO z FROM geofence_zones WHERE id = zid;
    SELECT * INTO cur FROM geofence_zone_history WHERE zone_id = zid AND recorded_to IS NULL;
    IF z.id IS NULL THEN
        UPDATE geofence_zone_history SET recorded_to = now()
        WHERE zone_id = zid AND recorded_to IS NULL;
        RETURN NULL;
    END IF;
    IF cur.id IS NOT NULL AND cur.code = z.code AND cur.kind = z.kind AND cur.name = z.name
       AND cur.district IS NOT DISTINCT FROM z.district
       AND cur.valid_from IS NOT DISTINCT FROM z.valid_from
       AND cur.valid_to IS NOT DISTINCT FROM z.valid_to
       AND cur.active = z.active AND cur.geometry = z.geometry
       AND cur.attributes = z.attributes THEN
        RETURN NULL;  -- nothing that evidence shows has changed
    END IF;
    IF cur.id IS NOT NULL THEN
        UPDATE geofence_zone_history SET recorded_to = now() WHERE id = cur.id;
    END IF;
    INSERT INTO geofence_zone_history (zone_id, code, kind, name, district, valid_from,
                                       valid_to, active, geometry, attributes, recorded_from)
    VALUES (z.id, z.code, z.kind, z.name, z.district, z.valid_from, z.valid_to, z.active,
            z.geometry, z.attributes, now());
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER geofence_zones_history
    AFTER INSERT OR UPDATE OR DELETE ON geofence_zones
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION geofence_zone_record();
