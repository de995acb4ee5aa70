-- Replay workers get their own table, so that `runs` lists the runs people recorded
-- (`SELECT count(*) FROM runs` agrees with `flordb runs`).
CREATE TABLE replay_workers AS SELECT * FROM runs WHERE mode = 'replay';
ALTER TABLE replay_workers ADD PRIMARY KEY (run_id);
DELETE FROM runs WHERE mode = 'replay';

-- Names, tags and notes people give runs (`flordb tag`, `flordb note`, `--kwargs flor.name=...`).
CREATE TABLE run_labels (
    run_id VARCHAR,
    kind   VARCHAR,               -- name | tag | note
    value  VARCHAR,
    added  TIMESTAMPTZ DEFAULT current_timestamp
);
