-- Which write of the rule state a truck_state row holds. The compliance engine keeps every
-- truck's rule state in memory between batches and sets a revision no other write shares
-- whenever it writes the state; while the row still carries that revision the cached state
-- is current and the row's rule_state is neither read nor decoded (compliance/carry.py).
-- 0: written by no engine (a new row, or one from before this column).
ALTER TABLE truck_state ADD COLUMN IF NOT EXISTS rule_rev bigint NOT NULL DEFAULT 0;
