-- Counting runs by saga and status (Store.count_runs, the dashboard's
-- overview) reads this small index instead of every row of the runs table
-- with its state: 57 ms rather than 450 ms over a million runs. Neither
-- column changes at a commit that keeps the run's status, so such commits
-- leave it untouched, as they leave runs_status_created.
CREATE INDEX IF NOT EXISTS runs_saga_status ON runs (saga, status);
