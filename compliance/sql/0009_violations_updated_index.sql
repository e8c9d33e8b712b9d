-- The live map's deltas also pick up trucks whose violations changed (opened, ended,
-- dismissed) since the cursor.
CREATE INDEX violations_updated_idx ON violations (updated_at);
