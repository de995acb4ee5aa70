-- Version 3: the number of torch threads a run used (intra-op), so that replay
-- workers use the same number and reductions add up in the same order.
ALTER TABLE runs ADD COLUMN threads INTEGER;
