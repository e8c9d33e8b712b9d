-- Alert subscriptions, the outbox every alert goes through, and the fan-out cursor.

-- Who wants which violations, and how. The subscriber is a dashboard user (by user name:
-- web_users belongs to web, above alerts, so web validates the name) or a team (a name for a
-- group that shares a webhook or a group robot). An empty filter array matches everything.
CREATE TABLE alert_subscriptions (
    id           bigserial PRIMARY KEY,
    owner_kind   text NOT NULL CHECK (owner_kind IN ('user', 'team')),
    owner        text NOT NULL,
    channel      text NOT NULL
                 CHECK (channel IN ('feed', 'webhook', 'wecom', 'dingtalk', 'email', 'apprise')),
    -- webhook: the receiver's URL; wecom / dingtalk / email / apprise: an apprise URL
    target       text NOT NULL DEFAULT '',
    secret       text NOT NULL DEFAULT '',          -- webhook: the HMAC-SHA256 key
    kinds        text[] NOT NULL DEFAULT '{}',
    severities   text[] NOT NULL DEFAULT '{}',
    districts    text[] NOT NULL DEFAULT '{}',      -- 行政区划代码
    company_ids  bigint[] NOT NULL DEFAULT '{}',
    events       text[] NOT NULL DEFAULT '{detected}',  -- violation_events.action
    active       boolean NOT NULL DEFAULT true,     -- removed subscriptions stay for history
    created_by   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- a team has no feed of its own: its members subscribe themselves
    CHECK (owner_kind = 'user' OR channel <> 'feed'),
    CHECK (channel = 'feed' OR target <> ''),
    CHECK (channel <> 'webhook' OR secret <> '')
);
CREATE INDEX alert_subscriptions_owner_idx ON alert_subscriptions (owner_kind, owner);

-- One row per alert to deliver: violation event × subscription. The idempotency key makes
-- fan-out re-runnable (a second pass inserts nothing) and travels with every delivery, so a
-- receiver can drop a duplicate. Feed alerts are delivered when written (the dashboard reads
-- them from here); the others wait for the dispatcher.
CREATE TABLE alert_outbox (
    id               bigserial PRIMARY KEY,
    idempotency_key  text NOT NULL UNIQUE,
    subscription_id  bigint NOT NULL REFERENCES alert_subscriptions (id),
    violation_id     bigint NOT NULL REFERENCES violations (id),
    event_id         bigint NOT NULL REFERENCES violation_events (id),
    event            text NOT NULL,
    channel          text NOT NULL,
    recipient        text,                  -- feed: the user name
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'delivered', 'dead', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    read_at          timestamptz            -- feed: marked as read
);
-- The dispatcher's queue: pending rows by due time.
CREATE INDEX alert_outbox_due_idx ON alert_outbox (next_attempt_at) WHERE status = 'pending';
-- The dead-letter page.
CREATE INDEX alert_outbox_dead_idx ON alert_outbox (id) WHERE status = 'dead';
-- A user's feed (the stream reads rows after the last one it sent; the badge counts unread).
CREATE INDEX alert_outbox_feed_idx ON alert_outbox (recipient, id) WHERE channel = 'feed';

-- How far fan-out has read violation_events: every event with an id up to last_id has been
-- fanned out (alerts/fanout.py explains the gaps left by uncommitted transactions).
CREATE TABLE alert_cursors (
    name        text PRIMARY KEY,
    last_id     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- Alerts start from now: on a database that already holds violations, their past events are
-- not sent to anyone.
INSERT INTO alert_cursors (name, last_id) SELECT 'fanout', COALESCE(max(id), 0) FROM violation_events;
