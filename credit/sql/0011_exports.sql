-- Every export of penalty (双公示) and list records: who, when, the filter, how many rows,
-- the SHA-256 of the file and the file itself, so that it can be downloaded again byte for
-- byte (what was sent to the credit platform is what is on record).
CREATE TABLE credit_exports (
    id             bigserial PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('penalties', 'lists')),
    format         text NOT NULL CHECK (format IN ('csv', 'xlsx', 'json')),
    filter         jsonb NOT NULL,
    row_count      integer NOT NULL,
    warning_count  integer NOT NULL,
    sha256         text NOT NULL,
    filename       text NOT NULL,
    content        bytea NOT NULL,
    created_by     text NOT NULL,
    via            text NOT NULL CHECK (via IN ('cli', 'web', 'nightly')),
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_exports_created_idx ON credit_exports (created_at DESC);
