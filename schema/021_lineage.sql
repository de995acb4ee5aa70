-- Version 21: runs that start from other runs (record/lineage.py).
-- parent_run/parent_iteration: the first checkpoint the run loaded with flor.load_checkpoint.
ALTER TABLE runs ADD COLUMN parent_run VARCHAR;
ALTER TABLE runs ADD COLUMN parent_iteration BIGINT;

-- Every load: a recorded run's checkpoint (kind 'checkpoint') or a file the
-- script loaded to resume (kind 'file', flor.resume_file: its content hash).
CREATE TABLE lineage (
    run_id           VARCHAR,
    seq              BIGINT,
    kind             VARCHAR,         -- checkpoint | file
    parent_run       VARCHAR,
    parent_iteration BIGINT,
    name             VARCHAR,         -- checkpointed object (NULL: all of them), or the file's path
    digest           VARCHAR,         -- file: sha256 of the bytes loaded (kept in the object store)
    nbytes           BIGINT
);

-- Replay workers keep the same columns as runs (they never load a parent of their own).
ALTER TABLE replay_workers ADD COLUMN parent_run VARCHAR;
ALTER TABLE replay_workers ADD COLUMN parent_iteration BIGINT;
