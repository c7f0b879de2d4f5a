-- Due runs are ordered by their timer, else by when they were created, no
-- longer by when they last changed. updated_at changes with every commit, so
-- keyed on it the index was rewritten by every step of every run; created_at
-- never changes, and a commit that keeps the run's status and timer now
-- leaves this index (and runs_status_created) untouched. The predicate still
-- matches the due_runs query word for word.
DROP INDEX runs_due;

CREATE INDEX runs_due ON runs (coalesce(wake_at, created_at))
    WHERE status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0;
