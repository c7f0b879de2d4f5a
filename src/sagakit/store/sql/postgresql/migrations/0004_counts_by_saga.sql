-- Counting runs by saga and status (Store.count_runs, the dashboard's
-- overview) can read this small index (an index-only scan, once vacuum has
-- marked the pages all-visible) instead of every row of the runs table with
-- its state. Neither column changes at a commit that keeps the run's status,
-- so such commits still update the row in place (HOT).
CREATE INDEX IF NOT EXISTS runs_saga_status ON {schema}.runs (saga, status);
