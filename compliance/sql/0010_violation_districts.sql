-- The district (行政区划代码) where a violation happened, stored on the violation so that the
-- list filters on an indexed column instead of testing 1,000,000 points against polygons.
-- Set by a trigger whenever the violation's position is set (at detection, or when the
-- evidence capture fills it in), from the boundaries in force at that moment: a later
-- boundary change does not move old violations (like the paper record), but violations
-- that had no district get one when districts are imported (compliance/districts.py).
ALTER TABLE violations ADD COLUMN district_code text;
CREATE INDEX violations_district_idx ON violations (district_code, started_at DESC);

CREATE FUNCTION violations_set_district() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.lat IS NULL OR NEW.lon IS NULL THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND NEW.lat = OLD.lat AND NEW.lon = OLD.lon
       AND OLD.district_code IS NOT NULL THEN
        RETURN NEW;
    END IF;
    NEW.district_code := geofence_district_at(NEW.lon, NEW.lat);
    RETURN NEW;
END;
$$;
CREATE TRIGGER violations_district
    BEFORE INSERT OR UPDATE OF lat, lon ON violations
    FOR EACH ROW EXECUTE FUNCTION violations_set_district();
