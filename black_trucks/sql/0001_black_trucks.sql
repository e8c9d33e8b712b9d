-- Black-truck (黑车) detection: every ANPR sighting classified once, and the black-truck list
-- grouped by plate (camera evidence) or by device id (telemetry from an unregistered
-- terminal). See docs/permits-and-black-trucks.md.

-- One row per classified sighting. `pending`: the truck is registered and permitted but no
-- GPS fix was found near the camera yet; decided once seen_at + window + grace has passed.
CREATE TABLE sighting_checks (
    sighting_id     bigint PRIMARY KEY REFERENCES sightings (id) ON DELETE CASCADE,
    seen_at         timestamptz NOT NULL,
    plate           text NOT NULL,
    truck_id        bigint REFERENCES trucks (id) ON DELETE SET NULL,
    outcome         text NOT NULL CHECK (outcome IN (
                        'ok', 'unregistered_plate', 'no_valid_permit', 'untracked', 'pending')),
    -- Read below compliance.anpr_min_confidence: kept and shown, never evidence alone.
    low_confidence  boolean NOT NULL DEFAULT false,
    -- Permit found valid at seen_at (ok / untracked / pending).
    permit_id       bigint REFERENCES permits (id) ON DELETE SET NULL,
    -- Nearest fix of the truck within the time window: metres from the camera's site (0 =
    -- inside it; NULL = no fix in the window or no site to measure from) and its time.
    nearest_fix_m   real,
    nearest_fix_at  timestamptz,
    detail          text,
    -- When the current outcome was first reached (a handled black truck reopens when new
    -- evidence is classified after it was handled).
    classified_at   timestamptz NOT NULL DEFAULT now(),
    checked_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sighting_checks_pending_idx ON sighting_checks (seen_at) WHERE outcome = 'pending';
CREATE INDEX sighting_checks_evidence_idx ON sighting_checks (plate, seen_at)
    WHERE outcome IN ('unregistered_plate', 'no_valid_permit', 'untracked');

-- Per unregistered device and local day: telemetry stored with truck_id NULL. Recomputed
-- for the days inside the scan's look-back, so a scan is idempotent and late re-uploads
-- are counted.
CREATE TABLE unregistered_device_days (
    device_id   text NOT NULL,
    day         date NOT NULL,
    first_fix   timestamptz NOT NULL,
    last_fix    timestamptz NOT NULL,
    fixes       integer NOT NULL,
    last_lat    double precision NOT NULL,
    last_lon    double precision NOT NULL,
    sites       text[] NOT NULL DEFAULT '{}',  -- site / disposal zone codes its fixes were in
    scanned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, day)
);

-- The black-truck list, maintained by the matcher and the device scan: one row per plate
-- (kind 'plate') or unregistered device id (kind 'device').
CREATE TABLE black_trucks (
    id                  bigserial PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('plate', 'device')),
    key                 text NOT NULL,          -- the plate or the device id
    truck_id            bigint REFERENCES trucks (id) ON DELETE SET NULL,
    first_seen          timestamptz NOT NULL,
    last_seen           timestamptz NOT NULL,
    -- plate: sightings with a black-truck outcome (confident ones among them); device: fixes.
    sightings           integer NOT NULL,
    confident_sightings integer NOT NULL,
    sites               text[] NOT NULL DEFAULT '{}',
    reasons             text[] NOT NULL DEFAULT '{}',
    last_evidence_at    timestamptz NOT NULL,   -- latest classification of its evidence
    status              text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'handled')),
    handled_by          text,
    handled_at          timestamptz,
    handled_note        text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, key)
);
CREATE INDEX black_trucks_status_idx ON black_trucks (status, last_seen DESC);
CREATE INDEX black_trucks_last_seen_idx ON black_trucks (last_seen DESC);

-- Every handling action, kept (traceable enforcement: who, when, what).
CREATE TABLE black_truck_actions (
    id              bigserial PRIMARY KEY,
    black_truck_id  bigint NOT NULL REFERENCES black_trucks (id) ON DELETE CASCADE,
    action          text NOT NULL CHECK (action IN ('handled', 'reopened')),
    actor           text NOT NULL,
    note            text NOT NULL DEFAULT '',
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX black_truck_actions_truck_idx ON black_truck_actions (black_truck_id, at);
