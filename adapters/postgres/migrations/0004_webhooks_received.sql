-- Webhook endpoints and their messages; received mail and its raw bytes.
CREATE TABLE mailroom_webhooks (
    account  text   NOT NULL,
    id       text   NOT NULL,
    record   bytea  NOT NULL,
    PRIMARY KEY (account, id)
);

CREATE TABLE mailroom_webhook_messages (
    webhook_id  text        NOT NULL,
    seq         bigint      NOT NULL,
    account     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    due_at      timestamptz,                  -- NULL once nothing more is to be attempted
    record      bytea       NOT NULL,
    PRIMARY KEY (webhook_id, seq)
);
CREATE INDEX mailroom_webhook_messages_due ON mailroom_webhook_messages (due_at, webhook_id, seq) WHERE due_at IS NOT NULL;
CREATE INDEX mailroom_webhook_messages_finished ON mailroom_webhook_messages (created_at) WHERE due_at IS NULL;

-- One arrival for several accounts keeps its raw bytes once.
CREATE TABLE mailroom_received_raw (
    id   bigserial PRIMARY KEY,
    raw  bytea     NOT NULL
);
CREATE TABLE mailroom_received (
    account  text    NOT NULL,
    id       uuid    NOT NULL,
    raw_id   bigint  NOT NULL REFERENCES mailroom_received_raw (id),
    record   bytea   NOT NULL,
    PRIMARY KEY (account, id)
);
