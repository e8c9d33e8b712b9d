-- What the compliance rules need from truck_state without a locking read of their own
-- (telemetry/store.py, compliance/engine.py).
--
-- rule_rev: which write of the rule state the row holds. The engine keeps every truck's rule
-- state in memory between batches and sets a revision no other write shares whenever it
-- writes the state; while the row still carries that revision the cached state is current
-- and rule_state is neither read nor decoded. 0: written by no engine.
--
-- prev_*: the row's last fix as it stood before the latest write. The batch's truck_state
-- upsert sets them from the old row and returns them, so that one write both locks the
-- batch's trucks and tells the rules where each truck was; PostgreSQL's RETURNING cannot
-- return old values. NULL: the latest write created the row.
ALTER TABLE truck_state
    ADD COLUMN IF NOT EXISTS rule_rev bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS prev_fix_time timestamptz,
    ADD COLUMN IF NOT EXISTS prev_load load_state,
    ADD COLUMN IF NOT EXISTS prev_speed_kmh real,
    ADD COLUMN IF NOT EXISTS prev_acc boolean;
