-- Trips: a truck's loaded journeys, from loading to unloading, as the trip state machine
-- (compliance/trips.py) records them.
CREATE TABLE trips (
    id               bigserial PRIMARY KEY,
    truck_id         bigint NOT NULL REFERENCES trucks (id),
    permit_no        text,
    origin_code      text,             -- construction site where the load was taken on
    destination_code text,             -- disposal site where it was unloaded
    loaded_at        timestamptz NOT NULL,
    unloaded_at      timestamptz,
    distance_m       double precision NOT NULL DEFAULT 0,
    status           text NOT NULL CHECK (status IN ('completed', 'unloaded_elsewhere', 'abandoned')),
    recorded_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (truck_id, loaded_at)
);
CREATE INDEX trips_loaded_idx ON trips (loaded_at DESC);
