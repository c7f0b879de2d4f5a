-- Counting runs by saga and status (Store.count_runs, the dashboard's
-- overview) reads this small index instead of every row of the runs table
-- with its state (the overview of a million runs rendered in 63 ms rather
-- than 456 ms: docs/benchmarks.md). Neither
-- column changes at a commit that keeps the run's status, so such commits
-- leave it untouched, as they leave runs_status_created.
CREATE INDEX IF NOT EXISTS runs_saga_status ON runs (saga, status);
