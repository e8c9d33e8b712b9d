-- Lists (名单): entries other departments act on (联合惩戒), each with its subject, the cases
-- behind it, its legal basis and authority, when it took effect and when it ends. An
-- automatic entry waits (pending) for a credit officer's sign-off when the scheme says so.

CREATE TABLE credit_list_entries (
    id                     bigserial PRIMARY KEY,
    subject_kind           text NOT NULL CHECK (subject_kind IN ('company', 'truck', 'driver')),
    -- company id, truck id or driver licence, as text: one key for the uniqueness rule
    subject_key            text NOT NULL,
    company_id             bigint REFERENCES companies (id),
    truck_id               bigint REFERENCES trucks (id),
    driver_licence         text,
    subject_name           text NOT NULL,
    credit_code            text,                 -- 统一社会信用代码 (or a plate / licence)
    legal_representative   text,
    list_type              text NOT NULL CHECK (list_type IN ('watch', 'red', 'black')),
    reason                 text NOT NULL,
    rules                  text[] NOT NULL DEFAULT '{}',   -- the automatic rules that fired
    legal_basis            text NOT NULL,        -- 认定依据
    authority_name         text NOT NULL,        -- 认定部门
    authority_credit_code  text,
    cycle_start            date,
    status                 text NOT NULL DEFAULT 'pending'
                           CHECK (status IN ('pending', 'active', 'rejected', 'removed')),
    automatic              boolean NOT NULL DEFAULT true,
    proposed_by            text NOT NULL,
    proposed_at            timestamptz NOT NULL DEFAULT now(),
    signed_off_by          text,
    signed_off_at          timestamptz,
    listed_on              date,                 -- 列入日期
    planned_removal_on     date,                 -- 计划移出日期
    removed_on             date,                 -- 实际移出日期
    removal_reason         text CHECK (removal_reason IN ('expiry', 'credit_repair',
                                                          'appeal_upheld', 'rejected',
                                                          'no_longer_holds')),
    removal_note           text,
    demo                   boolean NOT NULL DEFAULT false,
    updated_at             timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'active' OR (listed_on IS NOT NULL AND planned_removal_on IS NOT NULL)),
    CHECK (status NOT IN ('removed', 'rejected') OR removal_reason IS NOT NULL)
);
-- One entry in force or waiting per subject and list.
CREATE UNIQUE INDEX credit_list_entries_open_idx
    ON credit_list_entries (subject_kind, subject_key, list_type)
    WHERE status IN ('pending', 'active');
CREATE INDEX credit_list_entries_status_idx ON credit_list_entries (status, planned_removal_on);
CREATE INDEX credit_list_entries_company_idx ON credit_list_entries (company_id);

CREATE TABLE credit_list_entry_cases (
    entry_id  bigint NOT NULL REFERENCES credit_list_entries (id),
    case_id   bigint NOT NULL REFERENCES credit_cases (id),
    PRIMARY KEY (entry_id, case_id)
);

-- Every change to an entry (proposed, signed off, rejected, removed, expired): the audit.
CREATE TABLE credit_list_events (
    id        bigserial PRIMARY KEY,
    entry_id  bigint NOT NULL REFERENCES credit_list_entries (id),
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text NOT NULL,
    action    text NOT NULL,
    before    jsonb,
    after     jsonb,
    note      text
);
CREATE INDEX credit_list_events_entry_idx ON credit_list_events (entry_id, at);

-- A permit imported for a company on the blacklist: the permit is stored (permits never ask
-- credit), and the warning the import printed is kept here for the company page.
CREATE TABLE credit_permit_warnings (
    id          bigserial PRIMARY KEY,
    permit_no   text NOT NULL,
    company_id  bigint NOT NULL REFERENCES companies (id),
    entry_id    bigint NOT NULL REFERENCES credit_list_entries (id),
    message     text NOT NULL,
    source      text NOT NULL DEFAULT '',
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX credit_permit_warnings_company_idx ON credit_permit_warnings (company_id, at DESC);
