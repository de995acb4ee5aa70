-- Version 15: what a run used, so a replay task can declare it (DESIGN decision 7):
-- its peak resident memory and the GPUs it used. The scheduler packs replay
-- tasks so that their threads, memory and GPUs fit the machine or the cluster.
ALTER TABLE runs ADD COLUMN peak_rss BIGINT;   -- bytes, NULL when unknown
ALTER TABLE runs ADD COLUMN gpus INTEGER;      -- CUDA devices the run used (0: none)
ALTER TABLE replay_workers ADD COLUMN peak_rss BIGINT;
ALTER TABLE replay_workers ADD COLUMN gpus INTEGER;
