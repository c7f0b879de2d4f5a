-- A big state is not written whole at every commit. A commit that changes a
-- few top-level keys of a big state writes only those keys, as a row of
-- state_changes, and leaves runs.state as it is (PostgreSQL then keeps its
-- TOAST as it is too); the whole state is written again only once the
-- changes written since exceed its own size, and that commit deletes the
-- run's changes. A run's state is runs.state with its changes applied in
-- seq order; state_changes is 1 while it has some, so that a run without
-- any (every small state, every run written before this version) is read
-- from its row alone. Both are written in the commit's own statement, with
-- its events: the journal stays the truth, and a crash leaves both whole.
ALTER TABLE {schema}.runs ADD COLUMN IF NOT EXISTS state_changes int4 NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS {schema}.state_changes (
    run_id text NOT NULL,
    -- The seq of the last event of the commit that wrote it.
    seq int8 NOT NULL,
    -- The top-level keys the commit set, with their values.
    change jsonb NOT NULL,
    PRIMARY KEY (run_id, seq)
);
