-- truck_state is rewritten for every truck on every batch. With an index on a column that
-- changes each time (fix_time) no update can be HOT: each one inserted a new entry into every
-- index of the table, which made this upsert the most expensive statement of a batch with
-- the rules on (measured 58 µs per fix with the indexes, 35 µs without, on a loaded machine;
-- docs/performance.md).
-- The table holds one row per truck (tens of thousands), so the going-dark sweep scans it
-- instead; free space on each page lets the new row version stay on the same page.
DROP INDEX IF EXISTS truck_state_fix_time_idx;
ALTER TABLE truck_state SET (fillfactor = 50);
