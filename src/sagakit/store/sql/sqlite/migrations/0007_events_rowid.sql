-- The journal as a table with rowids. WITHOUT ROWID, a row lived in the
-- B-tree of its key (run_id, seq) itself, data and all: an event whose data
-- overflows its page (a run_started event that holds a big state, a big
-- result) was then read whole, into memory, whenever a search of that
-- B-tree compared a key with it, which writing a neighbouring run's events
-- does (a 10 MB copy for a 10 MB state). With rowids, the key's B-tree
-- (the primary key's index) holds the keys alone, and the data is reached
-- by its rowid only when it is read.
CREATE TABLE events_rowid (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    step TEXT,
    attempt INTEGER,
    at REAL NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);

INSERT INTO events_rowid (run_id, seq, kind, step, attempt, at, data)
SELECT run_id, seq, kind, step, attempt, at, data FROM events ORDER BY run_id, seq;

DROP TABLE events;

ALTER TABLE events_rowid RENAME TO events;

-- A big new run's first state is its run_started event's (the "state" member
-- of that event's data): rather than a copy of it, its first state change
-- names the event (from_event, the event's seq), its change an empty object.
-- A run's state is still its row's with its changes applied in seq order.
ALTER TABLE state_changes ADD COLUMN from_event INTEGER;
