-- How far the unregistered-device scan (black_trucks/devices.py) has read: its own table, so
-- that black_trucks writes no table of compliance (whose jump sweep keeps compliance_cursors).
-- For 'unregistered_devices', last_id is the epoch milliseconds of the previous pass's read.
CREATE TABLE black_truck_cursors (
    name     text PRIMARY KEY,
    last_id  bigint NOT NULL
);

-- The one read of another package's table: a database upgraded from before the move keeps
-- the scan's position, which it held in compliance_cursors. The old row stays there, unread
-- (only compliance may delete it, and its migrations run before this one).
INSERT INTO black_truck_cursors (name, last_id)
SELECT name, last_id FROM compliance_cursors WHERE name = 'unregistered_devices';
