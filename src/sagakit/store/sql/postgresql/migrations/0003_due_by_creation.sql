-- Due runs are ordered by their timer, else by when they were created, no
-- longer by when they last changed. updated_at changes with every commit, so
-- keyed on it the index made every commit a non-HOT update that rewrote the
-- index entry; created_at never changes, so a commit that keeps the run's
-- status and timer touches no indexed column and PostgreSQL can update the
-- row in place (HOT).
DROP INDEX {schema}.runs_due;
CREATE INDEX runs_due ON {schema}.runs ((coalesce(wake_at, created_at)))
    WHERE status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0;

-- Room on each page for the new versions of its rows: a HOT update must fit
-- on the page of the old one. Applies to pages written from now on.
ALTER TABLE {schema}.runs SET (fillfactor = 70);
