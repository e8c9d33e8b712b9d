-- How far the jump sweep (compliance/sweep.py) has read the quarantine.
CREATE TABLE compliance_cursors (
    name     text PRIMARY KEY,
    last_id  bigint NOT NULL
);
