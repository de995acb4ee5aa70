-- FlorDB catalog, version 1. Applied in order by flordb.store.catalog; the
-- catalog is an ordinary DuckDB file that any DuckDB client can open.

-- One row per run (recorded or replay worker), upserted from run.json/end.json.
CREATE TABLE runs (
    run_id      VARCHAR PRIMARY KEY,
    version     VARCHAR,            -- snapshot commit of the code
    script      VARCHAR,            -- path relative to the project root
    argv        VARCHAR[],
    status      VARCHAR,            -- running | finished | failed | interrupted
    error       VARCHAR,            -- exception type and message of a failed run
    started     TIMESTAMPTZ,
    ended       TIMESTAMPTZ,
    duration    DOUBLE,             -- seconds
    pid         INTEGER,
    host        VARCHAR,
    user_head   VARCHAR,            -- the user's HEAD when the run started
    user_branch VARCHAR,
    skipped     VARCHAR[],          -- untracked files left out of the snapshot (too big)
    mode        VARCHAR,            -- record | replay
    replay_of   VARCHAR,            -- for replay workers: the recorded run they extend
    replay_id   VARCHAR,
    complete    BOOLEAN DEFAULT false, -- ended and every segment ingested
    clock0      DOUBLE,             -- the run's monotonic clock at start (loop times are on it)
    startup     DOUBLE,             -- seconds from process start to the first FlorDB call
    cwd         VARCHAR             -- working directory, relative to the project root
);

-- Code versions: snapshots taken at run start and patched versions made by hindsight.
CREATE TABLE versions (
    version   VARCHAR PRIMARY KEY,
    git_dir   VARCHAR,
    work_tree VARCHAR,
    parent    VARCHAR,             -- for patched versions: the original snapshot
    kind      VARCHAR              -- snapshot | patched
);

-- Segments already ingested: makes ingest idempotent.
CREATE TABLE segments (
    run_id   VARCHAR,
    segment  VARCHAR,
    nrows    BIGINT,
    ingested TIMESTAMPTZ DEFAULT current_timestamp,
    PRIMARY KEY (run_id, segment)
);

-- Typed log records: vtype 0 null, 1 float, 2 int, 3 bool, 4 str, 5 json, 6 repr.
CREATE TABLE records (
    run_id    VARCHAR,             -- the recorded run (a replay's records carry the original's id)
    seq       BIGINT,
    name      VARCHAR,
    path      VARCHAR[],           -- enclosing loop names, outermost first
    coord     BIGINT[],            -- 0-based iteration of each enclosing loop
    vtype     TINYINT,
    num       DOUBLE,
    txt       VARCHAR,
    replay_id VARCHAR              -- NULL when recorded by the run itself
);

-- Per run and name: where and with which types it was logged (drives the `logs` schema).
CREATE TABLE log_names (
    run_id   VARCHAR,
    name     VARCHAR,
    path     VARCHAR[],
    vtype    TINYINT,
    n        BIGINT,
    replayed BOOLEAN              -- true when only hindsight replay produced it
);

-- Values a replay logged again for names the run had recorded: checked, not served.
CREATE TABLE fidelity (
    run_id    VARCHAR,
    replay_id VARCHAR,
    name      VARCHAR,
    path      VARCHAR[],
    coord     BIGINT[],
    vtype     TINYINT,
    num       DOUBLE,
    txt       VARCHAR
);

CREATE TABLE args (
    run_id VARCHAR,
    name   VARCHAR,
    vtype  TINYINT,
    num    DOUBLE,
    txt    VARCHAR
);

-- Loop contexts: one row per iteration of a top-level loop (kind 'iter', with
-- t2 the exit time of its nested loop) and one per execution of a nested loop
-- (kind 'loop', n iterations). Times are seconds on the run's monotonic clock.
CREATE TABLE loops (
    run_id VARCHAR,
    kind   VARCHAR,
    path   VARCHAR[],
    coord  BIGINT[],
    n      BIGINT,
    t0     DOUBLE,
    t1     DOUBLE,
    t2     DOUBLE,
    replay_id VARCHAR
);

CREATE TABLE checkpoints (
    run_id    VARCHAR,
    iteration BIGINT,              -- main-loop iteration whose nested-loop exit state this is
    name      VARCHAR,             -- registered object name, or __rng__
    digest    VARCHAR,
    format    VARCHAR,
    nbytes    BIGINT,
    seconds   DOUBLE               -- time the training thread spent
);

-- Hindsight replays: which statement, which patched version, how it went.
CREATE TABLE replays (
    replay_id  VARCHAR PRIMARY KEY,
    run_id     VARCHAR,
    names      VARCHAR[],
    version    VARCHAR,            -- patched version the replay executed
    statement  VARCHAR,
    strategy   VARCHAR,
    iterations VARCHAR,
    started    TIMESTAMPTZ,
    seconds    DOUBLE,
    estimate   DOUBLE,
    status     VARCHAR,            -- ok | diverged | failed
    fidelity   VARCHAR             -- first divergence, when diverged
);
