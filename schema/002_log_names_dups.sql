-- Version 2: how many records of a run share a coordinate with another record of
-- the same name (logged twice per step, or a top-level loop run twice). When no
-- run has any, `logs` reads a name's records directly instead of pivoting them.
-- NULL (catalogs from before this migration) means unknown: treated as "some".
ALTER TABLE log_names ADD COLUMN dups BIGINT;
