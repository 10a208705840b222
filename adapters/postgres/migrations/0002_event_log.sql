-- The event log. Writers insert entries without a number (`seq` NULL), in the transaction
-- of the change; a reader first numbers every committed, unnumbered entry in insertion order
-- (under an advisory lock, from the counter below). So numbers follow commit visibility: a
-- reader that has seen number n never later finds a smaller new one, and writers never wait
-- on a shared counter row.
CREATE TABLE mailroom_events (
    id       bigserial   PRIMARY KEY,
    seq      bigint      UNIQUE,
    account  text        NOT NULL,
    at       timestamptz NOT NULL,
    subject  bytea       NOT NULL
);
CREATE INDEX mailroom_events_by_account ON mailroom_events (account, seq);
CREATE INDEX mailroom_events_unnumbered ON mailroom_events (id) WHERE seq IS NULL;
CREATE INDEX mailroom_events_by_time ON mailroom_events (at) WHERE seq IS NOT NULL;

-- The last number given: kept apart so that pruning never makes a number come back.
CREATE TABLE mailroom_event_head (only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row), n bigint NOT NULL);
INSERT INTO mailroom_event_head (n) VALUES (0);
