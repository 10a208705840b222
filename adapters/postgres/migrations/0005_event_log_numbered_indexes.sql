-- Entries are written unnumbered (`seq` NULL) and numbered only when a reader asks, so the
-- indexes that read by number hold numbered entries only. A write then pays for the primary
-- key and the index of unnumbered entries — it paid for four indexes, two of them holding
-- nothing but NULLs until the numbering rewrote every entry anyway. Queries on `seq > $n`
-- imply `seq IS NOT NULL`, so they use these partial indexes as they used the full ones.
ALTER TABLE mailroom_events DROP CONSTRAINT mailroom_events_seq_key;
CREATE UNIQUE INDEX mailroom_events_seq ON mailroom_events (seq) WHERE seq IS NOT NULL;
DROP INDEX mailroom_events_by_account;
CREATE INDEX mailroom_events_by_account ON mailroom_events (account, seq) WHERE seq IS NOT NULL;
