-- Version 22: the physical layout of log records (issue 12). Cost follows the query,
-- not the history: a record is stored as small typed numbers (a name id, a run key, a
-- loop-path id and one BIGINT per loop level) in `record_rows`, inserted sorted by
-- (name, run, path, coordinates), so DuckDB's per-row-group min/max lets a query on
-- one name, one run or one epoch skip the rest. `records` stays, as a view with the
-- columns it always had, for people and for code that reads it.
CREATE TABLE names (
    name_id INTEGER PRIMARY KEY,
    name    VARCHAR                -- a flor.log name
);
CREATE TABLE paths (
    path_id INTEGER PRIMARY KEY,
    path    VARCHAR[]              -- enclosing loop names, outermost first
);
CREATE TABLE run_keys (
    run_key INTEGER PRIMARY KEY,
    run_id  VARCHAR                -- the recorded run (replayed records carry the original's id)
);
CREATE TABLE record_rows (
    name_id   INTEGER,
    run_key   INTEGER,
    path_id   INTEGER,
    c1        BIGINT,              -- 0-based iteration of the outermost enclosing loop (NULL: none)
    c2        BIGINT,
    c3        BIGINT,
    c4        BIGINT,
    deeper    BIGINT[],            -- coordinates below the fourth loop level (NULL: none)
    seq       BIGINT,
    vtype     TINYINT,
    num       DOUBLE,
    txt       VARCHAR,
    replay_id VARCHAR
);

INSERT INTO run_keys
SELECT row_number() OVER (ORDER BY run_id), run_id
FROM (SELECT run_id FROM records UNION SELECT run_id FROM loops);
INSERT INTO names SELECT row_number() OVER (ORDER BY min(rowid)), name FROM records GROUP BY name;
INSERT INTO paths SELECT row_number() OVER (ORDER BY path), path FROM (SELECT DISTINCT path FROM records);

INSERT INTO record_rows
SELECT n.name_id, k.run_key, p.path_id, r.coord[1], r.coord[2], r.coord[3], r.coord[4],
       CASE WHEN len(r.coord) > 4 THEN r.coord[5:] END, r.seq, r.vtype, r.num, r.txt, r.replay_id
FROM records r
JOIN run_keys k ON k.run_id IS NOT DISTINCT FROM r.run_id
JOIN names n ON n.name IS NOT DISTINCT FROM r.name
JOIN paths p ON p.path IS NOT DISTINCT FROM r.path
ORDER BY n.name_id, k.run_key, p.path_id, r.coord[1], r.coord[2], r.coord[3], r.coord[4], r.seq;

DROP TABLE records;

-- The records in the shape they always had (one row per logged value); `row_key`
-- names the stored row (flordb.store.catalog.Catalog.delete_records).
CREATE VIEW records_keyed AS
SELECT k.run_id, r.seq, n.name, p.path,
       CASE WHEN r.c1 IS NULL THEN CAST([] AS BIGINT[])
            WHEN r.c2 IS NULL THEN [r.c1]
            WHEN r.c3 IS NULL THEN [r.c1, r.c2]
            WHEN r.c4 IS NULL THEN [r.c1, r.c2, r.c3]
            ELSE list_concat([r.c1, r.c2, r.c3, r.c4], coalesce(r.deeper, CAST([] AS BIGINT[]))) END AS coord,
       r.vtype, r.num, r.txt, r.replay_id, r.rowid AS row_key
FROM record_rows r
JOIN run_keys k USING (run_key)
JOIN names n USING (name_id)
JOIN paths p USING (path_id);
CREATE VIEW records AS SELECT * EXCLUDE (row_key) FROM records_keyed;
