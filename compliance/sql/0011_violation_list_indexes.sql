-- The violations list over a million rows (docs/performance.md, `muck bench web
-- --violations`). Every filter is a condition on violations' own columns and the counts by
-- kind are one GROUP BY over violations alone, so the indexes below let PostgreSQL count
-- with index-only scans and read a sorted page straight from an index.

-- Time range (with any of the equality filters) and counts by kind: index-only.
CREATE INDEX violations_list_idx ON violations (started_at, id)
    INCLUDE (kind, status, severity, company_id, district_code);
-- District filter with counts by kind, index-only (replaces the plain district index).
DROP INDEX violations_district_idx;
CREATE INDEX violations_district_idx ON violations (district_code, started_at, id)
    INCLUDE (kind, status, severity);
-- Zone code filter.
CREATE INDEX violations_zone_idx ON violations (zone_code, started_at, id)
    WHERE zone_code IS NOT NULL;
-- Sorted pages: each sort key, then start and id in the same direction (web/violation_queries.py
-- SORTS), so that both directions are one index scan.
CREATE INDEX violations_sort_kind_idx ON violations (kind, started_at, id);
CREATE INDEX violations_sort_status_idx ON violations (status, started_at, id);
CREATE INDEX violations_sort_severity_idx ON violations (severity, started_at, id);
CREATE INDEX violations_sort_points_idx ON violations (points, started_at, id);
CREATE INDEX violations_sort_ended_idx ON violations (ended_at, started_at, id);
CREATE INDEX violations_sort_worst_idx ON violations
    (worst_value DESC NULLS LAST, started_at DESC, id DESC);
