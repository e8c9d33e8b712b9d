-- Transport companies, trucks and terminal bindings.

CREATE TABLE companies (
    id                   bigserial PRIMARY KEY,
    name                 text NOT NULL,
    -- Unified social credit code (GB 32100-2015). Real registries contain codes that fail
    -- the check character: they are kept and flagged, never dropped.
    credit_code          text UNIQUE,
    credit_code_valid    boolean NOT NULL DEFAULT false,
    legal_representative text,
    phone                text,
    active               boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trucks (
    id            bigserial PRIMARY KEY,
    plate         text NOT NULL UNIQUE,
    plate_color   text NOT NULL DEFAULT 'yellow'
                  CHECK (plate_color IN ('yellow', 'blue', 'green', 'yellow_green', 'white', 'black')),
    trailer_plate text,
    company_id    bigint REFERENCES companies (id),
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trucks_company_idx ON trucks (company_id);

-- A terminal (device id) is bound to one truck for a validity period; a device may move to
-- another truck later, so fixes are bound by fix time, not by the current binding.
CREATE TABLE terminals (
    id          bigserial PRIMARY KEY,
    device_id   text NOT NULL,
    truck_id    bigint NOT NULL REFERENCES trucks (id),
    valid_from  timestamptz NOT NULL,
    valid_to    timestamptz,
    model       text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_to IS NULL OR valid_to > valid_from),
    UNIQUE (device_id, valid_from)
);
CREATE INDEX terminals_truck_idx ON terminals (truck_id);
