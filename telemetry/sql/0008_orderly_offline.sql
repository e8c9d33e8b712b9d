-- For compliance's going-dark rule and sweep (compliance/rules/dark.py, compliance/sweep.py):
-- when the terminal last said, itself, that it was going offline: an `offline` status with its
-- own time and a shutdown reason (telemetry.contract.ORDERLY_REASONS). A last will says
-- `offline` when the connection was lost, which is how shielding looks too: not orderly.
ALTER TABLE device_status ADD COLUMN orderly_offline_at timestamptz;
