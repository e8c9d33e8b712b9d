-- Violations found by the rules, their history, and the rule-state snapshots used to replay
-- late fixes.

CREATE TABLE violations (
    id           bigserial PRIMARY KEY,
    truck_id     bigint NOT NULL REFERENCES trucks (id),
    company_id   bigint REFERENCES companies (id),
    kind         text NOT NULL,
    -- Which condition of the rule found it (e.g. lift_outside_sites, load_dropped_...).
    stream       text NOT NULL,
    started_at   timestamptz NOT NULL,
    ended_at     timestamptz,            -- NULL while the episode goes on
    worst_value  double precision,
    worst_unit   text NOT NULL DEFAULT '',
    severity     text NOT NULL DEFAULT 'minor' CHECK (severity IN ('minor', 'serious')),
    permit_no    text,
    zone_code    text,
    lat          double precision,
    lon          double precision,
    points       integer NOT NULL DEFAULT 0,
    legal_basis  text NOT NULL DEFAULT '',
    rule_params  jsonb NOT NULL DEFAULT '{}'::jsonb,
    -- The fixes that prove it: copied from positions so that evidence outlives retention.
    evidence     jsonb NOT NULL DEFAULT '[]'::jsonb,
    status       text NOT NULL DEFAULT 'new'
                 CHECK (status IN ('new', 'confirmed', 'dismissed', 'case_opened', 'closed',
                                   'withdrawn')),
    decision_no  text,
    detected_at  timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (truck_id, kind, stream, started_at)
);
CREATE INDEX violations_started_idx ON violations (started_at DESC);
CREATE INDEX violations_kind_idx ON violations (kind, started_at DESC);
CREATE INDEX violations_status_idx ON violations (status, started_at DESC);
CREATE INDEX violations_company_idx ON violations (company_id, started_at DESC);
CREATE INDEX violations_open_idx ON violations (truck_id) WHERE ended_at IS NULL;

-- Every change to a violation after it was found: never rewritten silently.
CREATE TABLE violation_events (
    id            bigserial PRIMARY KEY,
    violation_id  bigint NOT NULL REFERENCES violations (id),
    at            timestamptz NOT NULL DEFAULT now(),
    actor         text NOT NULL,          -- 'system' or a user name
    action        text NOT NULL,          -- detected, ended, revised, withdrawn, confirmed, ...
    before        jsonb,
    after         jsonb,
    note          text
);
CREATE INDEX violation_events_violation_idx ON violation_events (violation_id, at);

-- Rule state of a truck as of device time `at` (after every fix up to `at`): where a replay
-- starts when fixes older than the checkpoint arrive.
CREATE TABLE rule_snapshots (
    truck_id  bigint NOT NULL REFERENCES trucks (id),
    at        double precision NOT NULL,   -- epoch seconds, device time
    state     jsonb NOT NULL,
    PRIMARY KEY (truck_id, at)
);
