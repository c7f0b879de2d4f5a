-- The first schema: runs (the derived row of each run) and events (the journal).
-- JSON columns hold text written by sagakit.jsonutil; times are seconds since
-- the epoch (REAL), as the engine's clock gives them.

CREATE TABLE schema_version (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);

INSERT INTO schema_version (id, version) VALUES (1, 0);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    saga TEXT NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    owner TEXT,
    lease_epoch INTEGER NOT NULL DEFAULT 0,
    lease_until REAL,
    wake_at REAL,
    last_seq INTEGER NOT NULL DEFAULT 0
);

-- Listing: newest first, all runs or one status.
CREATE INDEX runs_created ON runs (created_at);
CREATE INDEX runs_status_created ON runs (status, created_at);

-- Claiming due work walks only the active runs, in the order they became due,
-- so a million settled runs cost nothing. The status list must match
-- sagakit.store.base.ACTIVE_STATUSES and the claim_due query word for word,
-- or SQLite will not use this index.
CREATE INDEX runs_due ON runs (coalesce(wake_at, updated_at))
    WHERE status IN ('pending', 'running', 'compensating');

CREATE TABLE events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    attempt INTEGER,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
