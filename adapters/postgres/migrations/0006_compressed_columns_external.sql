-- Emails' content and requests' logs are compressed by the process that writes them (zstd,
-- when it saves a tenth). A value still over ~2 KB — an email with attachments, a large
-- batch's log — is stored out of line without PostgreSQL trying to compress it again (pglz
-- gains nothing on compressed bytes and costs the shared database's CPU, on every write).
ALTER TABLE mailroom_emails ALTER COLUMN content SET STORAGE EXTERNAL;
ALTER TABLE mailroom_request_logs ALTER COLUMN record SET STORAGE EXTERNAL;
