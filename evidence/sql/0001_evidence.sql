-- Evidence of violations (docs/evidence.md): what proves each violation, frozen when it is
-- captured, with a SHA-256 over its canonical content; who captured and exported it, when.

CREATE TABLE evidence_records (
    id            bigserial PRIMARY KEY,
    violation_id  bigint NOT NULL REFERENCES violations (id),
    -- 1, 2, …: a violation revised by late fixes after its evidence was final gets a new
    -- version; the old one stays, superseded.
    version       integer NOT NULL,
    -- false: provisional (the episode is open or just ended), captured again as it grows;
    -- true: fixed for good.
    final         boolean NOT NULL,
    captured_at   timestamptz NOT NULL,
    -- When a provisional record becomes final (NULL once final).
    final_due_at  timestamptz,
    -- The episode as captured, to notice a revision.
    started_at    timestamptz NOT NULL,
    ended_at      timestamptz,
    fixes         integer NOT NULL,
    -- The canonical JSON (evidence/content.py) exactly as hashed: text, not jsonb, which
    -- would reorder keys and reformat numbers.
    content       text NOT NULL,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    superseded_at timestamptz,
    UNIQUE (violation_id, version)
);
CREATE UNIQUE INDEX evidence_records_current_idx ON evidence_records (violation_id)
    WHERE superseded_at IS NULL;

-- A final record's content and checksum are never rewritten through the product. This does
-- not stop someone with the database owner's rights (they can drop the trigger); the
-- checksum and `muck evidence verify` find that.
CREATE FUNCTION evidence_records_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.final AND (NEW.content IS DISTINCT FROM OLD.content
                      OR NEW.sha256 IS DISTINCT FROM OLD.sha256
                      OR NEW.captured_at IS DISTINCT FROM OLD.captured_at
                      OR NOT NEW.final) THEN
        RAISE EXCEPTION 'evidence record % of violation % is final', OLD.id, OLD.violation_id;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER evidence_records_frozen BEFORE UPDATE ON evidence_records
    FOR EACH ROW EXECUTE FUNCTION evidence_records_frozen();
CREATE TRIGGER evidence_records_no_delete BEFORE DELETE ON evidence_records
    FOR EACH ROW WHEN (OLD.final) EXECUTE FUNCTION evidence_records_frozen();

-- Violations the capture job still has to visit: opened, grown, ended or revised since its
-- cursor, until their evidence is final (a small table: open and recently ended episodes).
CREATE TABLE evidence_pending (
    violation_id  bigint PRIMARY KEY REFERENCES violations (id),
    queued_at     timestamptz NOT NULL DEFAULT now()
);

-- Where the capture job has read violations up to (violations.updated_at).
CREATE TABLE evidence_cursor (
    id          smallint PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    updated_at  timestamptz NOT NULL
);

-- Capture and every export of evidence: who, when, which record, how.
CREATE TABLE evidence_audit (
    id            bigserial PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,          -- 'system' or a user name
    action        text NOT NULL
                  CHECK (action IN ('capture', 'finalise', 'export_pdf', 'export_zip',
                                    'export_json', 'verify')),
    violation_id  bigint NOT NULL REFERENCES violations (id),
    record_id     bigint REFERENCES evidence_records (id),
    sha256        text,
    detail        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX evidence_audit_violation_idx ON evidence_audit (violation_id, at);
