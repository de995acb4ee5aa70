-- Files ingest refused (flordb.store.validate): moved aside, never silently dropped.
CREATE TABLE quarantine (
    run_id   VARCHAR,
    file     VARCHAR,            -- where it was, relative to the store
    reason   VARCHAR,            -- one line: why it was refused
    moved_to VARCHAR,            -- where it is now (NULL: left in place, the store is read-only)
    noticed  TIMESTAMPTZ DEFAULT current_timestamp
);
