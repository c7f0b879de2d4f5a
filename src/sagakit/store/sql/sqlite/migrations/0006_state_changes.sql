-- A big state is not written whole at every commit. A commit that changes a
-- few top-level keys of a big state writes only those keys, as a row of
-- state_changes; the whole state (runs.state, the snapshot) is written again
-- only once the changes written since exceed its own size, and that commit
-- deletes the run's changes. A run's state is its snapshot with its changes
-- applied in seq order; state_changes counts them, so that a run without
-- any (every small state, every run written before this version) is read
-- from its row alone. Both are written in the commit's own transaction, with
-- its events: the journal stays the truth, and a crash leaves both whole.
ALTER TABLE runs ADD COLUMN state_changes INTEGER NOT NULL DEFAULT 0;

CREATE TABLE IF NOT EXISTS state_changes (
    run_id TEXT NOT NULL,
    -- The seq of the last event of the commit that wrote it.
    seq INTEGER NOT NULL,
    -- A JSON object: the top-level keys the commit set, with their values.
    change TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
