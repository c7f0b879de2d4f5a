-- Mail and reservations. {schema} is replaced by the store's schema name.
--
-- Mail: requests (cancel, signal) left for a run by processes that do not
-- hold its lease. runs.mail counts a run's unread mail, so that "has this
-- run mail?" is a column of its row: the group commit reads it back for free
-- and claim_due finds such runs through the runs_due index.

ALTER TABLE {schema}.runs ADD COLUMN mail integer NOT NULL DEFAULT 0;

CREATE TABLE {schema}.mail (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id text NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL,
    at double precision NOT NULL
);

-- A run's unread mail, oldest first.
CREATE INDEX mail_run ON {schema}.mail (run_id, id);

-- Named resources held by one run until they expire or the run finishes.
CREATE TABLE {schema}.reservations (
    name text PRIMARY KEY,
    run_id text NOT NULL,
    expires_at double precision NOT NULL
);

CREATE INDEX reservations_run ON {schema}.reservations (run_id);

-- A run is now due when it is active, when its timer is set (whatever its
-- status: a paused run's deadline), or when it has mail. The index covers
-- exactly those rows, so settled runs still cost claim_due nothing. The
-- predicate must match the claim_due query word for word (and the status
-- list sagakit.store.base.ACTIVE_STATUSES), or PostgreSQL will not use it.
DROP INDEX {schema}.runs_due;
CREATE INDEX runs_due ON {schema}.runs ((coalesce(wake_at, updated_at)))
    WHERE status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0;
