-- The first schema: runs (the derived row of each run) and events (the journal).
-- {schema} is replaced by the store's schema name (a checked identifier).
-- Times are seconds since the epoch (double precision), as the engine's clock
-- gives them; JSON columns are jsonb.

CREATE TABLE {schema}.runs (
    id text PRIMARY KEY,
    saga text NOT NULL,
    version text NOT NULL,
    status text NOT NULL,
    state jsonb NOT NULL,
    error jsonb,
    created_at double precision NOT NULL,
    updated_at double precision NOT NULL,
    owner text,
    lease_epoch bigint NOT NULL DEFAULT 0,
    lease_until double precision,
    wake_at double precision,
    last_seq bigint NOT NULL DEFAULT 0
);

-- Listing: newest first, all runs or one status.
CREATE INDEX runs_created ON {schema}.runs (created_at, id);
CREATE INDEX runs_status_created ON {schema}.runs (status, created_at, id);

-- Claiming due work walks only the active runs, in the order they became due,
-- so a million settled runs cost nothing. The status list must match
-- sagakit.store.base.ACTIVE_STATUSES and the due_runs query word for word,
-- or PostgreSQL will not use this partial index.
CREATE INDEX runs_due ON {schema}.runs ((coalesce(wake_at, updated_at)))
    WHERE status IN ('pending', 'running', 'compensating');

CREATE TABLE {schema}.events (
    run_id text NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    step text,
    attempt integer,
    at double precision NOT NULL,
    data jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);
