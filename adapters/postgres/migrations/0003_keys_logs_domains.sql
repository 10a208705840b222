-- API keys, request logs and sending domains: the extensions the HTTP API and the domain
-- verifier use. As elsewhere, each record is postcard with a version byte; the columns beside
-- it are what queries select and order on.
CREATE TABLE mailroom_api_keys (
    token_sha256 bytea       PRIMARY KEY,
    account      text        NOT NULL,
    id           text        NOT NULL,
    created_at   timestamptz NOT NULL,
    record       bytea       NOT NULL
);
CREATE INDEX mailroom_api_keys_by_account ON mailroom_api_keys (account, created_at, id);

CREATE TABLE mailroom_request_logs (
    id          uuid        PRIMARY KEY,        -- time-ordered: newest first is id DESC
    account     text        NOT NULL,
    at          timestamptz NOT NULL,
    api_key_id  text,
    record      bytea       NOT NULL
);
CREATE INDEX mailroom_request_logs_by_account ON mailroom_request_logs (account, id);
CREATE INDEX mailroom_request_logs_by_time ON mailroom_request_logs (at);

CREATE TABLE mailroom_domains (
    account     text        NOT NULL,
    name        text        NOT NULL,
    id          text        NOT NULL,
    version     bigint      NOT NULL,
    next_check  timestamptz,
    record      bytea       NOT NULL,
    PRIMARY KEY (account, name)
);
CREATE INDEX mailroom_domains_by_id ON mailroom_domains (account, id);
CREATE INDEX mailroom_domains_by_name ON mailroom_domains (name);
CREATE INDEX mailroom_domains_due ON mailroom_domains (next_check) WHERE next_check IS NOT NULL;
