-- The suppression list found by id and listed by origin without reading an account's whole
-- list. An id is derived from the address (`mailroom_core::suppressions::id`) and the origin
-- from the encoded entry, so both are written by the process: rows from before this version
-- get them when a store connects (`PostgresStorage::index_suppressions`), NULL until then.
ALTER TABLE mailroom_suppressions ADD COLUMN id uuid, ADD COLUMN origin smallint;
CREATE INDEX mailroom_suppressions_by_id ON mailroom_suppressions (account, id);
CREATE INDEX mailroom_suppressions_by_origin ON mailroom_suppressions (account, origin, address COLLATE "C");
-- Pages are read in address order by bytes ("C"), whatever the database's own collation: the
-- primary key serves that order only in a "C" database, so elsewhere (an en-US one, the usual
-- default) each page sorted the account's whole list.
CREATE INDEX mailroom_suppressions_by_address ON mailroom_suppressions (account, address COLLATE "C");
-- The rows still to fill (both columns are always written together): empty once they are, so
-- looking for them at every connect reads nothing, and filling them reads each row once.
CREATE INDEX mailroom_suppressions_unindexed ON mailroom_suppressions (account, address) WHERE id IS NULL;
