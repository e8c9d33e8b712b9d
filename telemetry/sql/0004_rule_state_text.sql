-- The rules read every batch's trucks' rule state and parse it in the collector; nothing
-- queries inside it in SQL. As jsonb, every read paid for jsonb → text output and every
-- write for text → jsonb input (about 2 µs per truck and batch, measured in
-- docs/performance.md). Stored as the collector writes it: compact JSON text.
ALTER TABLE truck_state
    ALTER COLUMN rule_state DROP DEFAULT,
    ALTER COLUMN rule_state TYPE text USING rule_state::text,
    ALTER COLUMN rule_state SET DEFAULT '{}';
