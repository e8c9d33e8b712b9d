-- Counting by kind with a filter on a company, a truck (plate) or a kind, index-only
-- (web/violation_queries.py count_by_kind): the columns the filters and the count read are
-- included, so no heap page is visited.
DROP INDEX violations_sort_kind_idx;
CREATE INDEX violations_sort_kind_idx ON violations (kind, started_at, id)
    INCLUDE (status, severity, company_id, district_code);
CREATE INDEX violations_company_list_idx ON violations (company_id, started_at, id)
    INCLUDE (kind, status, severity, district_code);
CREATE INDEX violations_truck_list_idx ON violations (truck_id, started_at, id)
    INCLUDE (kind, status, severity, district_code);
