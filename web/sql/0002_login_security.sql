-- Failed log-ins, for throttling per account and per address (web/throttle.py). Rows older
-- than the throttle window are deleted by the log-in itself; audit_log keeps the record.
CREATE TABLE web_login_failures (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    username     text NOT NULL,
    remote_addr  text NOT NULL
);
CREATE INDEX web_login_failures_user_idx ON web_login_failures (username, at);
CREATE INDEX web_login_failures_addr_idx ON web_login_failures (remote_addr, at);

-- An administrator can make a user choose a new password at the next log-in.
ALTER TABLE web_users ADD COLUMN must_change_password boolean NOT NULL DEFAULT false;
