-- Evidence is copied off the hot path (compliance.violations.capture_evidence, run on the
-- clock by the collector): the violation row is the alert and lands with its batch; the
-- fixes that prove it follow within seconds, and again once the episode has ended.
ALTER TABLE violations
    ADD COLUMN evidence_at timestamptz,                      -- last copy, NULL: none yet
    ADD COLUMN evidence_final boolean NOT NULL DEFAULT false; -- copied after the episode ended
CREATE INDEX violations_evidence_due_idx ON violations (id) WHERE NOT evidence_final;
