-- Emails, idempotency keys and suppressions: what the Storage port needs.
-- Content and state are postcard-encoded (a version byte first, as the redb store does):
-- exact round trips of every field (128-bit claim tokens included), and compact rows. The
-- columns beside them are what queries select and order on.
CREATE TABLE mailroom_emails (
    id          uuid        PRIMARY KEY,          -- time-ordered: the listing order
    account     text        NOT NULL,
    created_at  timestamptz NOT NULL,
    due_at      timestamptz,                      -- NULL once nothing more is due
    pruned      boolean     NOT NULL DEFAULT false,
    content     bytea       NOT NULL,
    state       bytea       NOT NULL
);
CREATE INDEX mailroom_emails_by_account ON mailroom_emails (account, id);
CREATE INDEX mailroom_emails_due ON mailroom_emails (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX mailroom_emails_prunable ON mailroom_emails (created_at) WHERE due_at IS NULL AND NOT pruned;

CREATE TABLE mailroom_idempotency (
    account     text        NOT NULL,
    key         text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    completed   boolean     NOT NULL,
    record      bytea       NOT NULL,
    PRIMARY KEY (account, key)
);
CREATE INDEX mailroom_idempotency_expiry ON mailroom_idempotency (expires_at);

CREATE TABLE mailroom_suppressions (
    account     text        NOT NULL,
    address     text        NOT NULL,
    entry       bytea       NOT NULL,
    PRIMARY KEY (account, address)
);
