-- The black-truck scan of unregistered terminals (compliance/black_trucks.py) runs every
-- minute in every collector and looks only at devices with fixes received since its last
-- pass: this partial index finds those among the (few) fixes stored without a truck.
CREATE INDEX positions_unregistered_received_idx ON positions (received_at)
    WHERE truck_id IS NULL;
