-- For web/violation_queries.py: the violations list sorted by company name walks the companies
-- in name order.
CREATE INDEX companies_name_idx ON companies (name);
