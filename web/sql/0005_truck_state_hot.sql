-- Dropped so that truck_state updates are HOT (see telemetry/sql/0003_truck_state_hot.sql):
-- the live map's delta scans the one-row-per-truck table instead (a few ms at 20,000 trucks).
DROP INDEX IF EXISTS truck_state_updated_idx;
