-- JT/T 808 terminals that registered with the gateway (telemetry/jt808/): the auth code the
-- gateway gave each one (0x8100) and checks on every connection (0x0102), and the registry
-- device id its fixes are published under. A terminal re-registering gets a new code.
CREATE TABLE jt808_terminals (
    phone            text PRIMARY KEY,     -- the header's terminal phone, 12 digits
    device_id        text NOT NULL,        -- registry terminals.device_id it was bound to
    auth_code        text NOT NULL,
    terminal_id      text,
    plate            text,
    plate_color      smallint,
    manufacturer     text,
    model            text,
    registered_at    timestamptz NOT NULL DEFAULT now(),
    authenticated_at timestamptz
);
