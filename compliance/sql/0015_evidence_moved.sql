-- Evidence moved to its own package (evidence/: records with their checksum, audit, packs);
-- the fixes copied into violations.evidence are no longer written or read.
DROP INDEX IF EXISTS violations_evidence_due_idx;
ALTER TABLE violations
    DROP COLUMN IF EXISTS evidence,
    DROP COLUMN IF EXISTS evidence_at,
    DROP COLUMN IF EXISTS evidence_final;

-- Violations opened without a position (the going-dark sweep knows none) take the first fix
-- of the episode (compliance/places.py, a clock job); the district trigger follows.
CREATE INDEX violations_no_place_idx ON violations (id) WHERE lat IS NULL OR lon IS NULL;

-- evidence/capture.py: violations changed since its cursor (opened, grown, ended, revised).
-- violations_updated_idx (0009) serves it; nothing to add here.
