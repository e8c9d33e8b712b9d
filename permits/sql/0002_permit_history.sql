-- Every version of every permit (the permit row with its trucks, disposal sites and routes),
-- so that evidence (evidence/, its consumer) shows the permit as it was when a violation
-- happened. A row is in force from `recorded_from` until `recorded_to` (NULL: still in
-- force); a deleted permit's last row is closed. Written at commit by deferred triggers: an
-- import deletes and re-inserts a permit's trucks and zones, and only the end state counts.
CREATE TABLE permit_history (
    id             bigserial PRIMARY KEY,
    permit_id      bigint NOT NULL,
    number         text NOT NULL,
    -- The permit row, its company (name, credit code), truck ids and plates, disposal sites
    -- and routes in permit order.
    snapshot       jsonb NOT NULL,
    recorded_from  timestamptz NOT NULL,
    recorded_to    timestamptz,
    CHECK (recorded_to IS NULL OR recorded_to >= recorded_from)
);
-- evidence/content.py: "the version of permit <number> in force at <time>".
CREATE INDEX permit_history_number_idx ON permit_history (number, recorded_from);
CREATE UNIQUE INDEX permit_history_current_idx ON permit_history (permit_id)
    WHERE recorded_to IS NULL;

CREATE FUNCTION permit_snapshot(pid bigint) RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT to_jsonb(p) - 'created_at' - 'updated_at'
           || jsonb_build_object(
               'company', c.name, 'credit_code', c.credit_code,
               'truck_ids', COALESCE((SELECT jsonb_agg(t.id ORDER BY t.plate)
                                      FROM permit_trucks pt JOIN trucks t ON t.id = pt.truck_id
                                      WHERE pt.permit_id = p.id), '[]'::jsonb),
               'plates', COALESCE((SELECT jsonb_agg(t.plate ORDER BY t.plate)
                                   FROM permit_trucks pt JOIN trucks t ON t.id = pt.truck_id
                                   WHERE pt.permit_id = p.id), '[]'::jsonb),
               'disposal_sites', COALESCE((SELECT jsonb_agg(z.zone_code ORDER BY z.position)
                                           FROM permit_zones z
                                           WHERE z.permit_id = p.id AND z.role = 'disposal'),
                                          '[]'::jsonb),
               'routes', COALESCE((SELECT jsonb_agg(z.zone_code ORDER BY z.position)
                                   FROM permit_zones z
                                   WHERE z.permit_id = p.id AND z.role = 'route'),
                                  '[]'::jsonb))
    FROM permits p JOIN companies c ON c.id = p.company_id
    WHERE p.id = pid
$$;

-- Permits that exist before versioning: their history starts with what they are now.
INSERT INTO permit_history (permit_id, number, snapshot, recorded_from)
SELECT id, number, permit_snapshot(id), '-infinity' FROM permits;

-- Close the permit's version in force and open a new one if what it is now differs.
CREATE FUNCTION permit_history_write(pid bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    snap jsonb := permit_snapshot(pid);
    cur permit_history%ROWTYPE;
BEGIN
    SELECT * INTO cur FROM permit_history WHERE permit_id = pid AND recorded_to IS NULL;
    IF cur.id IS NOT NULL AND cur.snapshot IS NOT DISTINCT FROM snap THEN
        RETURN;  -- an import that changed nothing
    END IF;
    UPDATE permit_history SET recorded_to = now() WHERE id = cur.id;
    IF snap IS NOT NULL THEN  -- NULL: the permit was deleted
        INSERT INTO permit_history (permit_id, number, snapshot, recorded_from)
        VALUES (pid, snap->>'number', snap, now());
    END IF;
END;
$$;

-- One trigger function for the three tables: `permits` has `id`, the other two `permit_id`.
CREATE FUNCTION permit_history_record() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'permits' THEN
        PERFORM permit_history_write(COALESCE(NEW.id, OLD.id));
    ELSE
        PERFORM permit_history_write(COALESCE(NEW.permit_id, OLD.permit_id));
    END IF;
    RETURN NULL;
END;
$$;

CREATE CONSTRAINT TRIGGER permits_history
    AFTER INSERT OR UPDATE OR DELETE ON permits
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION permit_history_record();
CREATE CONSTRAINT TRIGGER permit_trucks_history
    AFTER INSERT OR UPDATE OR DELETE ON permit_trucks
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION permit_history_record();
CREATE CONSTRAINT TRIGGER permit_zones_history
    AFTER INSERT OR UPDATE OR DELETE ON permit_zones
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION permit_history_record();
