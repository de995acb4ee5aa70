-- One counter that every write of the catalog bumps (ingest, replays, versions, labels):
-- a process reuses what it derived from the catalog (the schema of `logs`, plans) while
-- the counter stays the same, and reads just this row to know.
CREATE TABLE catalog_state (generation BIGINT);
INSERT INTO catalog_state VALUES (0);
