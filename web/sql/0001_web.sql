-- Dashboard users, API tokens and the audit log.

CREATE TABLE web_users (
    id             bigserial PRIMARY KEY,
    username       text NOT NULL UNIQUE CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    display_name   text,
    -- werkzeug.security hash (scrypt); never the password itself.
    password_hash  text NOT NULL,
    role           text NOT NULL
                   CHECK (role IN ('supervisor', 'enforcement', 'credit', 'admin')),
    active         boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_login_at  timestamptz
);

-- Bearer tokens for machine clients of /api/v1/. Only the SHA-256 of the token is stored;
-- the token is shown once, when created.
CREATE TABLE web_api_tokens (
    id            bigserial PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES web_users (id),
    token_hash    text NOT NULL UNIQUE,
    name          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX web_api_tokens_user_idx ON web_api_tokens (user_id);

-- Who changed what, when: one row per state change made through the dashboard or `muck user`.
CREATE TABLE audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    user_id      bigint REFERENCES web_users (id),
    username     text,                   -- kept as written, even if the user is renamed
    action       text NOT NULL,          -- e.g. company.create, truck.deactivate, user.login
    entity       text NOT NULL,          -- table or object kind
    entity_id    text,
    before       jsonb,
    after        jsonb,
    remote_addr  text
);
CREATE INDEX audit_log_at_idx ON audit_log (at);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id);

-- Secret used to sign session cookies, generated once and shared by every web worker
-- (MUCK_SECRET_KEY overrides it).
CREATE TABLE web_secret (
    id          boolean PRIMARY KEY DEFAULT true CHECK (id),
    secret_key  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
