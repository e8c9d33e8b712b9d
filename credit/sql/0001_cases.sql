-- Cases (立案 → 处罚决定): an officer's case over one or more confirmed violations of one
-- party. A case is what credit counts: its points apply from `decided_at` until
-- `withdrawn_at`, in the scoring cycle that holds `decision_date`.

CREATE TABLE credit_cases (
    id                     bigserial PRIMARY KEY,
    case_no                text NOT NULL UNIQUE,       -- from the city's pattern, unique per year
    case_year              integer NOT NULL,
    party_kind             text NOT NULL DEFAULT 'company'
                           CHECK (party_kind IN ('company', 'individual')),
    company_id             bigint REFERENCES companies (id),
    truck_id               bigint REFERENCES trucks (id),   -- the truck, when the case is about one
    party_name             text NOT NULL,
    party_credit_code      text,                        -- 统一社会信用代码 (stored as given)
    party_credit_code_valid boolean,                    -- GB 32100 check; NULL when there is none
    legal_representative   text,
    party_id_no            text,                        -- an individual's identity number
    driver_name            text,
    driver_licence         text,
    facts                  text NOT NULL DEFAULT '',    -- 违法事实
    legal_basis            text NOT NULL DEFAULT '',    -- 处罚依据
    penalty_category       text,                        -- 处罚类别 (警告, 罚款, ...)
    penalty_content        text NOT NULL DEFAULT '',    -- 处罚内容
    fine_yuan              numeric(14, 2),
    decision_no            text UNIQUE,                 -- 行政处罚决定书文号
    decision_date          date,
    authority_name         text,                        -- 处罚机关
    authority_credit_code  text,
    status                 text NOT NULL DEFAULT 'open'
                           CHECK (status IN ('open', 'decided', 'published', 'closed',
                                             'withdrawn')),
    withdrawn_reason       text,
    decided_at             timestamptz,
    published_at           timestamptz,
    closed_at              timestamptz,
    withdrawn_at           timestamptz,
    demo                   boolean NOT NULL DEFAULT false,  -- made by `muck demo`, marked on pages
    created_by             text NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (status NOT IN ('decided', 'published', 'closed')
           OR (decision_no IS NOT NULL AND decision_date IS NOT NULL AND decided_at IS NOT NULL)),
    CHECK (status <> 'withdrawn' OR (withdrawn_reason IS NOT NULL AND withdrawn_at IS NOT NULL))
);
CREATE INDEX credit_cases_company_idx ON credit_cases (company_id, decision_date);
CREATE INDEX credit_cases_status_idx ON credit_cases (status, created_at DESC);

-- The violations of a case. A violation is in at most one case that is not withdrawn;
-- withdrawing a case releases its violations (active = false), which keeps the history.
CREATE TABLE credit_case_violations (
    case_id       bigint NOT NULL REFERENCES credit_cases (id),
    violation_id  bigint NOT NULL REFERENCES violations (id),
    active        boolean NOT NULL DEFAULT true,
    PRIMARY KEY (case_id, violation_id)
);
CREATE UNIQUE INDEX credit_case_violations_active_idx
    ON credit_case_violations (violation_id) WHERE active;

-- Every change to a case: who, when, what it was before and after.
CREATE TABLE credit_case_events (
    id        bigserial PRIMARY KEY,
    case_id   bigint NOT NULL REFERENCES credit_cases (id),
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,        -- opened, edited, decided, published, closed, withdrawn, ...
    before    jsonb,
    after     jsonb,
    note      text
);
CREATE INDEX credit_case_events_case_idx ON credit_case_events (case_id, at);
