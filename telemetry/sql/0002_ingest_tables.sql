-- Everything the collector rejects, with the reason; nothing is silently dropped.
CREATE TABLE quarantine (
    id            bigserial PRIMARY KEY,
    received_at   timestamptz NOT NULL,
    topic         text NOT NULL,
    device_id     text,
    reason        text NOT NULL,
    detail        text,
    payload       bytea NOT NULL,       -- truncated to ingest.quarantine_payload_bytes
    payload_bytes integer NOT NULL      -- size of the original payload
);
CREATE INDEX quarantine_received_idx ON quarantine (received_at);
CREATE INDEX quarantine_reason_idx ON quarantine (reason, received_at);

-- Plate sightings from ANPR cameras at site gates and checkpoints.
CREATE TABLE sightings (
    id           bigserial PRIMARY KEY,
    camera_id    text NOT NULL,
    seen_at      timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    plate        text NOT NULL,
    plate_color  text,
    direction    text,
    site_id      text,
    confidence   real,
    image_ref    text,
    UNIQUE (camera_id, seen_at, plate)
);
CREATE INDEX sightings_plate_idx ON sightings (plate, seen_at);
CREATE INDEX sightings_time_idx ON sightings (seen_at);

-- Terminal online/offline from the retained status topic (also the terminal's last will).
CREATE TABLE device_status (
    device_id   text PRIMARY KEY,
    status      text NOT NULL CHECK (status IN ('online', 'offline')),
    changed_at  timestamptz NOT NULL
);

-- Each registered truck's latest position and its rule state. Updated with the batch that
-- stored the fixes, so a restarted collector continues from here.
CREATE TABLE truck_state (
    truck_id        bigint PRIMARY KEY REFERENCES trucks (id),
    device_id       text NOT NULL,
    fix_time        timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    lat             double precision NOT NULL,
    lon             double precision NOT NULL,
    speed_kmh       real,
    heading         smallint,
    lid             lid_state,
    lift            lift_state,
    load            load_state,
    acc             boolean,
    alarms          text[],
    rule_state      jsonb NOT NULL DEFAULT '{}'::jsonb,
    rule_checkpoint timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX truck_state_fix_time_idx ON truck_state (fix_time);
