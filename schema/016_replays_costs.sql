-- Version 16: what replay tasks took against what the cost model said, so the
-- next plan's estimate is calibrated (flordb.hindsight.tasks.calibrate).
ALTER TABLE replays ADD COLUMN work DOUBLE;        -- seconds, summed over the replay's tasks
ALTER TABLE replays ADD COLUMN model DOUBLE;       -- the uncalibrated estimate of the same tasks
ALTER TABLE replays ADD COLUMN executor VARCHAR;   -- local | ray
ALTER TABLE replays ADD COLUMN workers INTEGER;    -- tasks that ran at once
ALTER TABLE replays ADD COLUMN threads INTEGER;    -- threads per task (the run's)
ALTER TABLE replays ADD COLUMN attempts INTEGER;   -- task starts, retries included
