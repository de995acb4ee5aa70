-- Version 20: what runs printed (record/capture.py). One row per captured line
-- of stdout/stderr or `logging` record, at the loop coordinates it was printed at.
-- channel: stdout | stderr | logging (a record whose handler wrote around the
-- capture) | capture (how many lines the per-run ceiling left out).
CREATE TABLE console (
    run_id  VARCHAR,
    seq     BIGINT,               -- order within the run
    path    VARCHAR[],            -- enclosing loop names, outermost first
    coord   BIGINT[],             -- 0-based iteration of each enclosing loop
    channel VARCHAR,
    logger  VARCHAR,              -- logging records: the logger's name
    level   VARCHAR,              -- logging records: DEBUG, INFO, WARNING, ERROR, CRITICAL
    text    VARCHAR
);
