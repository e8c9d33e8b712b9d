-- For compliance's going-dark rule and sweep (compliance/rules/dark.py, compliance/sweep.py):
-- when the terminal last said, itself, that it was going offline. Only an `offline` status
-- carrying the terminal's own time counts (an orderly shutdown); a plain `offline` is what a
-- last will says when the connection was lost, which is how shielding looks too.
ALTER TABLE device_status ADD COLUMN orderly_offline_at timestamptz;
