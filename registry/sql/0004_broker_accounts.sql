-- Broker accounts: one per terminal, camera and platform service (collector, gateway, web).
-- Only a PBKDF2-SHA512 hash of the password is kept, in Mosquitto's password-file format
-- (`$7$iterations$salt$hash`), so `muck broker sync` can write the broker's file as it is.
-- A revoked account stays (who had which credentials, and until when, is evidence too).
CREATE TABLE broker_accounts (
    id             bigserial PRIMARY KEY,
    username       text NOT NULL UNIQUE,
    kind           text NOT NULL
                   CHECK (kind IN ('terminal', 'camera', 'collector', 'gateway', 'web')),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    rotated_at     timestamptz,
    revoked_at     timestamptz,
    CHECK (username ~ '^[A-Za-z0-9_.:-]{1,64}$')
);
