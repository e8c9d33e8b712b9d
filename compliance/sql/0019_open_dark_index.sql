-- The open going-dark gaps (a handful at any time): the rules look for those a back-fill has
-- shown to be no silence, for the trucks of every batch (compliance/sweep.py
-- withdraw_stale_dark); without this index that is an index probe per truck and batch.
CREATE INDEX violations_open_dark_idx ON violations (truck_id)
    WHERE kind = 'going_dark' AND stream = 'gap' AND ended_at IS NULL AND status <> 'withdrawn';
