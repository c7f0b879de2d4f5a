-- Mail (requests left for a run by processes that do not hold its lease) and
-- reservations (named resources held by one run at a time).

-- How many mail rows wait for the run; kept in step with the mail table by
-- the store, so claiming due work need not look into that table.
ALTER TABLE runs ADD COLUMN mail INTEGER NOT NULL DEFAULT 0;

-- AUTOINCREMENT: an id is never reused, even after the newest mail is read and
-- deleted, so a commit's mail_read can never delete a later request by mistake.
CREATE TABLE mail (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
);

CREATE INDEX mail_run ON mail (run_id);

CREATE TABLE reservations (
    name TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    expires_at REAL NOT NULL
);

-- A finished run's reservations are deleted by run id.
CREATE INDEX reservations_run ON reservations (run_id);

-- A run is now due for work when it has mail, when its timer is set (whatever
-- its status: a paused run's deadline), or when it is active. The index holds
-- exactly the runs that may become due; settled runs without timer or mail
-- stay out of it. The predicate must match the due_runs query word for word,
-- or SQLite will not use this index.
DROP INDEX runs_due;

CREATE INDEX runs_due ON runs (coalesce(wake_at, updated_at))
    WHERE status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0;
