-- Violations raised before their district's boundary was imported get the district later,
-- from compliance/districts.py (a scheduled job, and the dashboard's district upload).
-- Until issue 15 a trigger on geofence_district_rings did this inside geofence's import:
-- compliance may not hang its logic on another package's table, so that trigger (a
-- compliance object since web/sql/0003) is dropped where it exists.
DROP TRIGGER IF EXISTS district_rings_changed ON geofence_district_rings;
DROP FUNCTION IF EXISTS violations_fill_districts();

-- The job visits only violations still without a district.
CREATE INDEX violations_no_district_idx ON violations (id)
    WHERE district_code IS NULL AND lat IS NOT NULL AND lon IS NOT NULL;
