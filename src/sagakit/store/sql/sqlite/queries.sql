-- Named queries of the SQLite store, loaded by sagakit.store.sql.load_queries.
-- Each block starts with "-- name: NAME". The text of a query never changes at
-- run time, so sqlite3's statement cache prepares each one once.
-- Run columns are always selected in the order of RunRecord's fields.

-- name: schema_version_exists
SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version';

-- name: get_schema_version
SELECT version FROM schema_version WHERE id = 1;

-- name: set_schema_version
UPDATE schema_version SET version = ? WHERE id = 1;

-- Writes. Each new run and each commit reaches SQLite as one JSON array
-- (sagakit.store.sqlite.writes), its events nested in it; a batch is a JSON
-- array of those arrays. json_extract is used rather than ->> so that SQLite
-- 3.35 (the first with RETURNING) runs them.
--
-- A new run:  [0 id, 1 saga, 2 version, 3 status, 4 state, 5 error,
--              6 created_at, 7 updated_at, 8 owner, 9 lease_epoch,
--              10 lease_until, 11 wake_at, 12 last_seq, 13 events]
-- A commit:   [0 id, 1 owner, 2 epoch, 3 keeps its status and lease, 4 release,
--              5 finished, 6 status, 7 state, 8 error, 9 at, 10 wake_at,
--              11 last seq (null: no events), 12 events, 13 change,
--              14 clears the run's changes]
-- A commit's change is null when it writes the whole state in the run's row
-- (7); otherwise 7 is null and 13 holds the top-level keys it sets, or the
-- whole state when 14 clears the run's changes (then the row's state is
-- emptied): see migration 0006.
-- An event:   [0 seq, 1 kind, 2 step, 3 attempt, 4 at, 5 data]
-- State, error and data are JSON values in the array; json_extract gives
-- each back as JSON text, as the columns hold it.
--
-- json_each's value column is made anew, as JSON text rendered from the
-- parsed array, at each place a statement names it: a row's fifteen
-- json_extract(value, ...) rendered its array fifteen times (nearly a
-- quarter of a step's instructions, with a thousand runs at once, went to
-- that rendering). So each value is taken once, in a subquery that SQLite
-- cannot merge into the query around it ("LIMIT -1 OFFSET 0": a subquery
-- with an OFFSET is never flattened), and json_extract then parses that
-- one text once (its cache holds it for the other columns).

-- name: insert_run
-- ?1: a new run. A run whose id is taken is left as it is (no row changes).
INSERT INTO runs (
    id, saga, version, status, state, error, created_at, updated_at,
    owner, lease_epoch, lease_until, wake_at, last_seq
)
SELECT json_extract(?1, '$[0]'), json_extract(?1, '$[1]'), json_extract(?1, '$[2]'),
       json_extract(?1, '$[3]'), json_extract(?1, '$[4]'), json_extract(?1, '$[5]'),
       json_extract(?1, '$[6]'), json_extract(?1, '$[7]'), json_extract(?1, '$[8]'),
       json_extract(?1, '$[9]'), json_extract(?1, '$[10]'), json_extract(?1, '$[11]'),
       json_extract(?1, '$[12]')
WHERE true
ON CONFLICT (id) DO NOTHING;

-- name: insert_events_of
-- The events of one write ?1 (a new run or a commit) of run ?3, found at
-- the path ?2. The run's id is bound rather than read from ?1: json_each
-- does not share json_extract's cache of parsed texts, and each would parse
-- the whole write again.
INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
SELECT ?3, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
       json_extract(e.value, '$[2]'), json_extract(e.value, '$[3]'),
       json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]')
FROM (SELECT value FROM json_each(?1, ?2) LIMIT -1 OFFSET 0) AS e;

-- name: commit_run
-- ?1: a commit. Fenced: no row is updated (none returned) unless the lease
-- is still the committer's. Returns the run's unread mail count.
UPDATE runs SET
    status = json_extract(?1, '$[6]'),
    state = CASE WHEN json_extract(?1, '$[13]') IS NULL THEN json_extract(?1, '$[7]')
                 WHEN json_extract(?1, '$[14]') THEN '{}' ELSE state END,
    state_changes = CASE WHEN json_extract(?1, '$[13]') IS NULL THEN 0 ELSE 1 END,
    error = json_extract(?1, '$[8]'),
    updated_at = json_extract(?1, '$[9]'),
    wake_at = json_extract(?1, '$[10]'),
    owner = CASE WHEN json_extract(?1, '$[4]') THEN NULL ELSE owner END,
    lease_until = CASE WHEN json_extract(?1, '$[4]') THEN NULL ELSE lease_until END,
    last_seq = coalesce(json_extract(?1, '$[11]'), last_seq)
WHERE id = json_extract(?1, '$[0]') AND owner = json_extract(?1, '$[1]')
  AND lease_epoch = json_extract(?1, '$[2]')
RETURNING mail;

-- name: commit_run_kept
-- commit_run for a commit that keeps the run's status and timer (they are
-- as the row holds them) and its lease (it does not release the run):
-- those columns are not SET, so SQLite leaves the indexes on them
-- (runs_due, runs_status_created, runs_saga_status, runs_owner) alone,
-- which it would otherwise rewrite at each commit whatever the values.
UPDATE runs SET
    state = CASE WHEN json_extract(?1, '$[13]') IS NULL THEN json_extract(?1, '$[7]')
                 WHEN json_extract(?1, '$[14]') THEN '{}' ELSE state END,
    state_changes = CASE WHEN json_extract(?1, '$[13]') IS NULL THEN 0 ELSE 1 END,
    error = json_extract(?1, '$[8]'),
    updated_at = json_extract(?1, '$[9]'),
    last_seq = coalesce(json_extract(?1, '$[11]'), last_seq)
WHERE id = json_extract(?1, '$[0]') AND owner = json_extract(?1, '$[1]')
  AND lease_epoch = json_extract(?1, '$[2]')
RETURNING mail;

-- name: insert_state_change
-- The change of commit ?1 (one whose change is set, written with commit_run).
INSERT INTO state_changes (run_id, seq, change)
VALUES (json_extract(?1, '$[0]'), json_extract(?1, '$[11]'), json_extract(?1, '$[13]'));

-- A big write's parts, each bound on its own in place of the placeholder
-- its array holds (sagakit.store.sqlite.writes.Big), in the write's own
-- transaction. Each changes nothing when its parameters are NULL: so it is
-- run again, to let go of the big text it was bound to.

-- name: big_state
UPDATE runs SET state = ?2 WHERE id = ?1 AND ?2 IS NOT NULL;

-- name: big_change
UPDATE state_changes SET change = ?3 WHERE run_id = ?1 AND seq = ?2 AND ?3 IS NOT NULL;

-- name: created_change
-- A big new run's state change ?3, keyed by the seq ?2: its state as its
-- first event holds it (keyed by that event's seq), and the keys its first
-- commit set over it (keyed by its last event's). Its row's state is left
-- empty (sagakit.store.sqlite.writes.Big).
INSERT INTO state_changes (run_id, seq, change) SELECT ?1, ?2, ?3 WHERE ?3 IS NOT NULL;

-- name: created_from_event
-- A big new run's first state is its event ?2's (migration 0007).
INSERT INTO state_changes (run_id, seq, change, from_event) VALUES (?1, ?2, '{}', ?2);

-- name: created_changes
-- The run ?1 has state changes (created_change).
UPDATE runs SET state_changes = 1 WHERE id = ?1;

-- name: big_event_data
UPDATE events SET data = ?3 WHERE run_id = ?1 AND seq = ?2 AND ?3 IS NOT NULL;

-- A part of 256 KiB or more is written in pieces instead (writes._fill):
-- its place made as a zero blob of its size in UTF-8 (which SQLite stores
-- without making it in memory), filled by incremental blob I/O, then made
-- TEXT again, as the column holds it, by a statement that binds nothing big.
-- Bound whole, it was held three times at once: Python's text, SQLite's copy
-- of the parameter, and the record made from it. Not the run's row's state
-- (big_state): incremental blob I/O cannot write a column of a table with an
-- index on an expression (runs_due).

-- name: zero_change
UPDATE state_changes SET change = zeroblob(?3) WHERE run_id = ?1 AND seq = ?2 RETURNING rowid;

-- name: zero_created_change
INSERT INTO state_changes (run_id, seq, change) VALUES (?1, ?2, zeroblob(?3)) RETURNING rowid;

-- name: text_change
UPDATE state_changes SET change = CAST(change AS TEXT) WHERE rowid = ?;

-- name: zero_event_data
UPDATE events SET data = zeroblob(?3) WHERE run_id = ?1 AND seq = ?2 RETURNING rowid;

-- name: text_event_data
UPDATE events SET data = CAST(data AS TEXT) WHERE rowid = ?;

-- name: clear_state_changes
DELETE FROM state_changes WHERE run_id = ?;

-- name: state_changes_of
-- The changes of the runs in the JSON array ?1, each run's in seq order: a
-- change that names an event is that event's data (whose "state" it is),
-- given as the event's rowid, to be read with incremental blob I/O: as a
-- column, SQLite would copy a value that big before sqlite3 copied it again.
SELECT c.run_id, CASE WHEN e.rowid IS NULL THEN c.change END, c.from_event IS NOT NULL, e.rowid
FROM state_changes AS c
LEFT JOIN events AS e ON c.from_event IS NOT NULL AND e.run_id = c.run_id AND e.seq = c.from_event
WHERE c.run_id IN (SELECT value FROM json_each(?1))
ORDER BY c.run_id, c.seq;

-- name: get_run
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs WHERE id = ?;

-- name: list_runs
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE (:status IS NULL OR status = :status) AND (:saga IS NULL OR saga = :saga)
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset;

-- name: list_runs_by_status
-- A separate text: with "(:status IS NULL OR status = :status)" SQLite scans
-- every run by creation time instead of using runs_status_created, so
-- `sagakit list --status needs_attention` would read a million settled runs.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE status = :status AND (:saga IS NULL OR saga = :saga)
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset;

-- name: page_runs
-- Store.page_runs: a page of runs after a cursor (:at, :id), newest first.
-- :lo and :hi are the one range of created_at to read, inclusive (the store
-- folds the cursor and the since/until filter into them): SQLite reads that
-- range from runs_created and stops at :limit, so a deep page costs what
-- the first does. Both are constant expressions, never ":x IS NULL OR ...",
-- which SQLite cannot use as a range; "+created_at" keeps the exclusive
-- :until a filter, not a second upper bound that SQLite might pick instead
-- of :hi. Only runs created at the same instant are sorted by id
-- ("USE TEMP B-TREE FOR RIGHT PART OF ORDER BY").
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE created_at >= coalesce(:lo, -9e999) AND created_at <= coalesce(:hi, 9e999)
  AND (:until IS NULL OR +created_at < :until)
  AND (:at IS NULL OR created_at < :at OR id < :id)
  AND (:saga IS NULL OR saga = :saga) AND (:version IS NULL OR version = :version)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: page_runs_by_status
-- The same on runs_status_created, for one status (a separate text, as
-- list_runs_by_status: SQLite would not pick the index otherwise).
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE status = :status AND created_at >= coalesce(:lo, -9e999) AND created_at <= coalesce(:hi, 9e999)
  AND (:until IS NULL OR +created_at < :until)
  AND (:at IS NULL OR created_at < :at OR id < :id)
  AND (:saga IS NULL OR saga = :saga) AND (:version IS NULL OR version = :version)
ORDER BY created_at DESC, id DESC
LIMIT :limit;

-- name: page_runs_newer
-- The page just newer than a cursor (Store.page_runs' ``before``): oldest
-- first, the store turns it around.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE created_at >= coalesce(:lo, -9e999) AND created_at <= coalesce(:hi, 9e999)
  AND (:until IS NULL OR +created_at < :until)
  AND (:at IS NULL OR created_at > :at OR id > :id)
  AND (:saga IS NULL OR saga = :saga) AND (:version IS NULL OR version = :version)
ORDER BY created_at ASC, id ASC
LIMIT :limit;

-- name: page_runs_newer_by_status
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE status = :status AND created_at >= coalesce(:lo, -9e999) AND created_at <= coalesce(:hi, 9e999)
  AND (:until IS NULL OR +created_at < :until)
  AND (:at IS NULL OR created_at > :at OR id > :id)
  AND (:saga IS NULL OR saga = :saga) AND (:version IS NULL OR version = :version)
ORDER BY created_at ASC, id ASC
LIMIT :limit;

-- name: count_runs
-- Store.count_runs: runs by saga and status, in one pass over the covering
-- index runs_saga_status (in its order: nothing to sort).
SELECT saga, status, count(*) FROM runs GROUP BY saga, status;

-- name: journal
SELECT run_id, seq, kind, at, step, attempt, data
FROM events WHERE run_id = ? AND seq > ? ORDER BY seq;

-- name: journals
-- The journals of the runs in the JSON array ?1, as one JSON array of
-- [run_id, seq, kind, at, step, attempt, data] in journal order.
SELECT coalesce(json_group_array(json_array(run_id, seq, kind, at, step, attempt, data)), '[]')
FROM (
    SELECT e.run_id, e.seq, e.kind, e.at, e.step, e.attempt, e.data
    FROM json_each(?1) AS r JOIN events AS e ON e.run_id = r.value
    ORDER BY e.run_id, e.seq
);

-- name: claim
-- A run that needs attention keeps its timer, which is its owed alert: a
-- claimer that dies before delivering it leaves it due for the next one.
UPDATE runs SET
    owner = :owner,
    lease_epoch = lease_epoch + 1,
    lease_until = :lease_until,
    wake_at = CASE WHEN status = 'needs_attention' THEN wake_at END
WHERE id = :id AND (owner IS NULL OR lease_until IS NULL OR lease_until < :now)
RETURNING id, saga, version, status, state, error, created_at, updated_at,
          owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes;

-- name: due_runs
-- :sagas is NULL (any saga) or a JSON array of [name, version] pairs.
-- The first condition is the predicate of the runs_due index, word for word,
-- so SQLite knows the index holds every row that can match; the third one is
-- the due rule itself (Store.claim_due), which the predicate merely widens.
-- The second: no live lease, and not held back (a run released with a hold
-- keeps lease_until and no owner, see the release query).
SELECT id FROM runs INDEXED BY runs_due
WHERE (status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0)
  AND (lease_until IS NULL OR lease_until < :now)
  AND (mail > 0 OR wake_at <= :now
       OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
  AND (:sagas IS NULL OR EXISTS (
      SELECT 1 FROM json_each(:sagas) AS s
      WHERE json_extract(s.value, '$[0]') = runs.saga
        AND json_extract(s.value, '$[1]') = runs.version
  ))
ORDER BY coalesce(wake_at, created_at)
LIMIT :limit;

-- name: owners
-- Store.owners: every owner named by a lease, from the partial index runs_owner.
SELECT DISTINCT owner FROM runs WHERE owner IS NOT NULL;

-- name: held_runs
-- Store.claim_held: the runs one of :owners (a JSON array) holds, lapsed or
-- not, that due_runs would find were the lease lapsed (the due rule).
-- "owner IS NOT NULL" lets SQLite use the partial index runs_owner.
SELECT id FROM runs INDEXED BY runs_owner
WHERE owner IS NOT NULL AND owner IN (SELECT value FROM json_each(:owners))
  AND (mail > 0 OR wake_at <= :now
       OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
  AND (:sagas IS NULL OR EXISTS (
      SELECT 1 FROM json_each(:sagas) AS s
      WHERE json_extract(s.value, '$[0]') = runs.saga
        AND json_extract(s.value, '$[1]') = runs.version
  ))
ORDER BY created_at, id
LIMIT :limit;

-- name: claim_held
-- The runs :ids (a JSON array) of held_runs, in the same transaction: claimed
-- as claim does, but whether or not their leases lapsed. One statement for
-- them all: a worker restarted under its identity takes back a thousand runs
-- at once, and a statement each took three times as long. RETURNING's order
-- is SQLite's own; the caller puts the rows back in held_runs' order.
UPDATE runs SET
    owner = :owner,
    lease_epoch = lease_epoch + 1,
    lease_until = :lease_until,
    wake_at = CASE WHEN status = 'needs_attention' THEN wake_at END
WHERE id IN (SELECT value FROM json_each(:ids))
RETURNING id, saga, version, status, state, error, created_at, updated_at,
          owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes;

-- name: backlog_attention
-- Store.backlog: runs that need attention by saga, and how many of them are
-- owed an alert (their timer set). Uses runs_status_created.
SELECT saga, count(*), count(wake_at) FROM runs
WHERE status = 'needs_attention'
GROUP BY saga;

-- name: backlog_due
-- Store.backlog: the runs due_runs would find (any saga), counted, and when
-- the oldest became due. The same conditions, on the same index.
SELECT count(*), min(coalesce(wake_at, created_at)) FROM runs INDEXED BY runs_due
WHERE (status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0)
  AND (lease_until IS NULL OR lease_until < :now)
  AND (mail > 0 OR wake_at <= :now
       OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')));

-- name: renew
UPDATE runs SET lease_until = ? WHERE id = ? AND owner = ? AND lease_epoch = ?;

-- name: release
-- ?4: NULL, or the time the run is held back until (Store.release): it is
-- kept as lease_until with no owner, which due_runs honours and claim does not.
UPDATE runs SET owner = NULL, lease_until = ?4, wake_at = coalesce(?4, wake_at)
WHERE id = ?1 AND owner = ?2 AND lease_epoch = ?3;

-- name: read_mail
-- A commit's mail_read: only the run's own mail is deleted (an id of another
-- run's mail is ignored), and the caller counts what was.
DELETE FROM mail WHERE id = ? AND run_id = ?;

-- name: lower_mail
UPDATE runs SET mail = mail - ? WHERE id = ?
RETURNING mail;

-- name: free_reservations
DELETE FROM reservations WHERE run_id = ?;

-- name: count_mail
-- A post: the run's count goes up first, so a missing run is seen (no row).
UPDATE runs SET mail = mail + 1 WHERE id = ?
RETURNING id;

-- name: insert_mail
INSERT INTO mail (run_id, kind, data, at) VALUES (?, ?, ?, ?)
RETURNING id;

-- name: mail
SELECT id, run_id, kind, data, at FROM mail WHERE run_id = ? ORDER BY id;

-- name: reserve
-- Take the name if nobody holds it, its reservation expired, or this run
-- holds it already (then only the expiry moves). Otherwise nothing changes;
-- the caller reads the row back either way, in the same transaction.
INSERT INTO reservations (name, run_id, expires_at) VALUES (:name, :run_id, :expires_at)
ON CONFLICT (name) DO UPDATE SET
    run_id = excluded.run_id,
    expires_at = excluded.expires_at
WHERE reservations.expires_at <= :now OR reservations.run_id = :run_id;

-- name: get_reservation
SELECT name, run_id, expires_at FROM reservations WHERE name = ?;

-- name: reservation_holders
-- The holders of a commit's required reservations (a JSON array of names).
SELECT name, run_id, expires_at FROM reservations
WHERE name IN (SELECT value FROM json_each(?));

-- name: release_reservations
-- :names is NULL (all of the run's reservations) or a JSON array of names.
DELETE FROM reservations
WHERE run_id = :run_id
  AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)));

-- name: reservations
SELECT name, run_id, expires_at FROM reservations
WHERE (:run_id IS NULL OR run_id = :run_id) AND (:now IS NULL OR expires_at > :now)
ORDER BY name;

-- The batch form of the writes above: a group commit of any size is one
-- statement, an INSERT into the view `batch` whose trigger writes the lot,
-- and one read of what the batch needs to know (usually nothing). Few
-- statements matter more than fast ones: sqlite3 releases the GIL around
-- every statement and must win it back from a busy event loop afterwards,
-- which takes up to the interpreter's switch interval (5 ms) each time.
-- The view, its trigger and their scratch tables are TEMP objects, made on
-- each connection as it opens (they are not part of the schema): a batch's
-- positions of runs whose id is taken (`batch_taken`), and its commits,
-- unpacked (`batch_commits`).

-- name: batch_taken_table
CREATE TEMP TABLE IF NOT EXISTS batch_taken (position INTEGER PRIMARY KEY);

-- name: batch_commits_table
-- A batch's commits, each unpacked from its JSON once: every statement after
-- reads these columns, where each would otherwise walk the batch's JSON and
-- parse each commit again. mail is the run's unread mail count, or null when
-- the commit is fenced out (its lease is no longer the committer's).
CREATE TEMP TABLE IF NOT EXISTS batch_commits (
    position INTEGER PRIMARY KEY,
    id TEXT, owner TEXT, epoch INTEGER, kept INTEGER, ends_lease INTEGER, finished INTEGER,
    status TEXT, state TEXT, error TEXT, at REAL, wake_at REAL, last_seq INTEGER,
    events TEXT, mail INTEGER, change TEXT, clears INTEGER
);

-- name: batch_view
-- creates: a JSON array of new runs; commits: one of commits (runs distinct);
-- moves, keeps, finishes: whether any commit moves its run's status or timer
-- (or releases it), keeps them and its lease, or finishes its run; changes: whether any commit writes a
-- state change or clears its run's (a statement no commit needs is skipped).
CREATE TEMP VIEW IF NOT EXISTS batch (creates, commits, moves, keeps, finishes, changes) AS
SELECT NULL, NULL, NULL, NULL, NULL, NULL;

-- name: batch_trigger
-- Each statement looks its runs up by id (tests/integration/test_sqlite_plans.py).
-- A commit is written only if the lease is still the committer's: the same
-- fence as commit_run, checked once as the commits are unpacked, and kept
-- to by each statement after.
CREATE TEMP TRIGGER IF NOT EXISTS batch_write INSTEAD OF INSERT ON batch BEGIN
    DELETE FROM batch_taken;
    DELETE FROM batch_commits;
    INSERT INTO batch_taken (position)
    SELECT c.key FROM json_each(NEW.creates) AS c
    JOIN runs AS r ON r.id = json_extract(c.value, '$[0]');
    INSERT INTO runs (
        id, saga, version, status, state, error, created_at, updated_at,
        owner, lease_epoch, lease_until, wake_at, last_seq
    )
    SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
           json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
           json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
           json_extract(value, '$[9]'), json_extract(value, '$[10]'), json_extract(value, '$[11]'),
           json_extract(value, '$[12]')
    FROM (SELECT key, value FROM json_each(NEW.creates) LIMIT -1 OFFSET 0)
    WHERE key NOT IN (SELECT position FROM batch_taken)
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO batch_commits (
        position, id, owner, epoch, kept, ends_lease, finished, status, state, error,
        at, wake_at, last_seq, events, mail, change, clears
    )
    SELECT c.key, c.id, c.owner, c.epoch, json_extract(c.value, '$[3]'),
           json_extract(c.value, '$[4]'), json_extract(c.value, '$[5]'),
           json_extract(c.value, '$[6]'), json_extract(c.value, '$[7]'),
           json_extract(c.value, '$[8]'), json_extract(c.value, '$[9]'),
           json_extract(c.value, '$[10]'), json_extract(c.value, '$[11]'),
           json_extract(c.value, '$[12]'), r.mail,
           json_extract(c.value, '$[13]'), json_extract(c.value, '$[14]')
    -- The id, owner and epoch taken once, for the row and for the fence
    -- (from the value taken once: naming json_each's value here would
    -- render it three more times).
    FROM (
        SELECT key, value, json_extract(value, '$[0]') AS id, json_extract(value, '$[1]') AS owner,
               json_extract(value, '$[2]') AS epoch
        FROM (SELECT key, value FROM json_each(NEW.commits) LIMIT -1 OFFSET 0)
        LIMIT -1 OFFSET 0
    ) AS c
    LEFT JOIN runs AS r ON r.id = c.id AND r.owner = c.owner AND r.lease_epoch = c.epoch;
    -- The events of the new runs written and of the commits not fenced out
    -- (the last element of each array).
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT run_id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
           json_extract(value, '$[2]'), json_extract(value, '$[3]'),
           json_extract(value, '$[4]'), json_extract(value, '$[5]')
    FROM (
        SELECT json_extract(w.value, '$[0]') AS run_id, e.value AS value
        FROM (SELECT key, value FROM json_each(NEW.creates) LIMIT -1 OFFSET 0) AS w,
             json_each(w.value, '$[#-1]') AS e
        WHERE w.key NOT IN (SELECT position FROM batch_taken)
        LIMIT -1 OFFSET 0
    );
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT id, json_extract(value, '$[0]'), json_extract(value, '$[1]'),
           json_extract(value, '$[2]'), json_extract(value, '$[3]'),
           json_extract(value, '$[4]'), json_extract(value, '$[5]')
    FROM (
        SELECT c.id AS id, e.value AS value
        FROM batch_commits AS c, json_each(c.events) AS e
        WHERE c.mail IS NOT NULL
        LIMIT -1 OFFSET 0
    );
    -- Commits that move the run's status or timer, or release it (as commit_run).
    UPDATE runs SET
        status = c.status,
        state = CASE WHEN c.change IS NULL THEN c.state WHEN c.clears THEN '{}' ELSE runs.state END,
        state_changes = CASE WHEN c.change IS NULL THEN 0 ELSE 1 END,
        error = c.error,
        updated_at = c.at,
        wake_at = c.wake_at,
        owner = CASE WHEN c.ends_lease THEN NULL ELSE runs.owner END,
        lease_until = CASE WHEN c.ends_lease THEN NULL ELSE runs.lease_until END,
        last_seq = coalesce(c.last_seq, runs.last_seq)
    FROM batch_commits AS c
    WHERE runs.id = c.id AND runs.owner = c.owner AND runs.lease_epoch = c.epoch
      AND c.mail IS NOT NULL AND NOT c.kept AND NEW.moves;
    -- Commits that keep them and the lease (as commit_run_kept: those
    -- columns not SET, so their indexes are left alone).
    UPDATE runs SET
        state = CASE WHEN c.change IS NULL THEN c.state WHEN c.clears THEN '{}' ELSE runs.state END,
        state_changes = CASE WHEN c.change IS NULL THEN 0 ELSE 1 END,
        error = c.error,
        updated_at = c.at,
        last_seq = coalesce(c.last_seq, runs.last_seq)
    FROM batch_commits AS c
    WHERE runs.id = c.id AND runs.owner = c.owner AND runs.lease_epoch = c.epoch
      AND c.mail IS NOT NULL AND c.kept AND NEW.keeps;
    -- The state changes: a commit that writes the whole state clears the
    -- run's (when it may have some); one that writes a change adds it (the
    -- whole state, replacing them, when it clears them too).
    DELETE FROM state_changes WHERE NEW.changes AND run_id IN (
        SELECT id FROM batch_commits WHERE clears AND mail IS NOT NULL
    );
    INSERT INTO state_changes (run_id, seq, change)
    SELECT id, last_seq, change FROM batch_commits
    WHERE NEW.changes AND change IS NOT NULL AND last_seq IS NOT NULL AND mail IS NOT NULL;
    -- The reservations of the runs a commit finishes (not those fenced out).
    DELETE FROM reservations WHERE NEW.finishes AND run_id IN (
        SELECT id FROM batch_commits WHERE finished AND mail IS NOT NULL
    );
END;

-- name: lone_view
-- A step's commit written on its own (sagakit.store.sqlite.writes.write_alone):
-- one statement, an INSERT into this view, is the whole transaction, where
-- BEGIN, commit_run_kept, insert_events_of and COMMIT took four. Only a
-- commit that keeps its run's status, timer and lease, adds events, writes
-- its state whole in the row and reads no mail comes this way.
CREATE TEMP VIEW IF NOT EXISTS lone (run_id, owner, epoch, write) AS SELECT NULL, NULL, NULL, NULL;

-- name: lone_trigger
-- Fenced as commit_run_kept: nothing changes unless the lease is still the
-- committer's (its owner and epoch are bound as columns of their own, as
-- well as in the write: each statement that reads the write's JSON parses
-- it whole). What it did is told by the rows it changed (the connection's
-- total_changes, which counts a trigger's rows): none when fenced out, else
-- the run's row and each event, and one more when mail waits for the run
-- (the second UPDATE, which sets mail to itself, changes a row only then).
CREATE TEMP TRIGGER IF NOT EXISTS lone_write INSTEAD OF INSERT ON lone BEGIN
    UPDATE runs SET
        state = json_extract(NEW.write, '$[7]'),
        state_changes = 0,
        error = json_extract(NEW.write, '$[8]'),
        updated_at = json_extract(NEW.write, '$[9]'),
        last_seq = json_extract(NEW.write, '$[11]')
    WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch;
    UPDATE runs SET mail = mail
    WHERE id = NEW.run_id AND mail > 0 AND owner = NEW.owner AND lease_epoch = NEW.epoch;
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
           json_extract(e.value, '$[2]'), json_extract(e.value, '$[3]'),
           json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]')
    FROM (SELECT value FROM json_each(NEW.write, '$[12]') LIMIT -1 OFFSET 0) AS e
    WHERE EXISTS (
        SELECT 1 FROM runs WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch
    );
END;

-- name: write_lone
INSERT INTO lone (run_id, owner, epoch, write) VALUES (?1, ?2, ?3, ?4);

-- name: lone_new_view
-- A new run written on its own (sagakit.store.sqlite.writes.write_new_alone):
-- one statement, an INSERT into this view, where BEGIN, insert_run,
-- insert_events_of and COMMIT took four. Only a new run with no big part
-- comes this way.
CREATE TEMP VIEW IF NOT EXISTS lone_new (run_id, write) AS SELECT NULL, NULL;

-- name: lone_new_trigger
-- insert_run, then insert_events_of only if the run's row was inserted
-- (changes(), inside a trigger, counts the rows of its last statement): a
-- run whose id is taken is left as it is, and nothing changes (the caller
-- tells so by the connection's total_changes, and reads that run).
CREATE TEMP TRIGGER IF NOT EXISTS lone_new_write INSTEAD OF INSERT ON lone_new BEGIN
    INSERT INTO runs (
        id, saga, version, status, state, error, created_at, updated_at,
        owner, lease_epoch, lease_until, wake_at, last_seq
    )
    SELECT NEW.run_id, json_extract(NEW.write, '$[1]'), json_extract(NEW.write, '$[2]'),
           json_extract(NEW.write, '$[3]'), json_extract(NEW.write, '$[4]'),
           json_extract(NEW.write, '$[5]'), json_extract(NEW.write, '$[6]'),
           json_extract(NEW.write, '$[7]'), json_extract(NEW.write, '$[8]'),
           json_extract(NEW.write, '$[9]'), json_extract(NEW.write, '$[10]'),
           json_extract(NEW.write, '$[11]'), json_extract(NEW.write, '$[12]')
    WHERE true
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
           json_extract(e.value, '$[2]'), json_extract(e.value, '$[3]'),
           json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]')
    FROM (SELECT value FROM json_each(NEW.write, '$[13]') LIMIT -1 OFFSET 0) AS e
    WHERE changes() > 0;
END;

-- name: write_lone_new
INSERT INTO lone_new (run_id, write) VALUES (?1, ?2);

-- name: lone_finish_view
-- A commit that finishes its run and releases it, written on its own
-- (sagakit.store.sqlite.writes.write_finish_alone): one statement, an INSERT
-- into this view, where BEGIN, commit_run, insert_events_of,
-- free_reservations and COMMIT took five. Only such a commit that adds
-- events, writes its state whole in the row and reads no mail comes this way.
CREATE TEMP VIEW IF NOT EXISTS lone_finish (run_id, owner, epoch, write) AS SELECT NULL, NULL, NULL, NULL;

-- name: lone_finish_trigger
-- Fenced as commit_run: nothing changes unless the lease is still the
-- committer's. The run's row is updated last, as the update lets the lease
-- go: the statements before it find the lease to fence on. What it did is
-- told by the rows it changed (the connection's total_changes): none when
-- fenced out, else each event and the run's row, and more when the run held
-- reservations (each one freed) or mail waits for it (the UPDATE that sets
-- mail to itself changes a row only then); the caller reads the run's mail
-- count when there were more (run_mail), as the count does not tell which.
CREATE TEMP TRIGGER IF NOT EXISTS lone_finish_write INSTEAD OF INSERT ON lone_finish BEGIN
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
           json_extract(e.value, '$[2]'), json_extract(e.value, '$[3]'),
           json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]')
    FROM (SELECT value FROM json_each(NEW.write, '$[12]') LIMIT -1 OFFSET 0) AS e
    WHERE EXISTS (
        SELECT 1 FROM runs WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch
    );
    DELETE FROM reservations WHERE run_id = NEW.run_id AND EXISTS (
        SELECT 1 FROM runs WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch
    );
    UPDATE runs SET mail = mail
    WHERE id = NEW.run_id AND mail > 0 AND owner = NEW.owner AND lease_epoch = NEW.epoch;
    UPDATE runs SET
        status = json_extract(NEW.write, '$[6]'),
        state = json_extract(NEW.write, '$[7]'),
        state_changes = 0,
        error = json_extract(NEW.write, '$[8]'),
        updated_at = json_extract(NEW.write, '$[9]'),
        wake_at = json_extract(NEW.write, '$[10]'),
        owner = NULL,
        lease_until = NULL,
        last_seq = json_extract(NEW.write, '$[11]')
    WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch;
END;

-- name: write_lone_finish
INSERT INTO lone_finish (run_id, owner, epoch, write) VALUES (?1, ?2, ?3, ?4);

-- name: slots_view
-- A step's commit written on its own with at most two events, every value
-- bound as a parameter of its own (sagakit.store.sqlite.writes.encode_lone):
-- as lone, without SQLite parsing a JSON array (json_each, and json_extract
-- at each column) to take the values apart, which cost a third of the
-- statement's work. The second event's columns are NULL when it has one.
CREATE TEMP VIEW IF NOT EXISTS lone_slots (
    run_id, owner, epoch, state, error, at, last_seq,
    seq1, kind1, step1, attempt1, at1, data1, seq2, kind2, step2, attempt2, at2, data2
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;

-- name: slots_trigger
-- As lone_trigger: fenced alike, and told by the rows it changed alike. The
-- events are inserted right after the run's fenced update, as long as it
-- changed the row (changes(), inside a trigger, counts the rows of its last
-- statement), rather than after looking the run up again for each event:
-- those lookups were a fifth of the statement's work.
CREATE TEMP TRIGGER IF NOT EXISTS lone_slots_write INSTEAD OF INSERT ON lone_slots BEGIN
    UPDATE runs SET
        state = NEW.state,
        state_changes = 0,
        error = NEW.error,
        updated_at = NEW.at,
        last_seq = NEW.last_seq
    WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch;
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, NEW.seq1, NEW.kind1, NEW.step1, NEW.attempt1, NEW.at1, NEW.data1
    WHERE changes() > 0
    UNION ALL
    SELECT NEW.run_id, NEW.seq2, NEW.kind2, NEW.step2, NEW.attempt2, NEW.at2, NEW.data2
    WHERE NEW.seq2 IS NOT NULL AND changes() > 0;
    UPDATE runs SET mail = mail
    WHERE id = NEW.run_id AND mail > 0 AND owner = NEW.owner AND lease_epoch = NEW.epoch;
END;

-- name: write_lone_slots
INSERT INTO lone_slots VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19
);

-- name: finish_slots_view
-- The commit that finishes its run, written on its own with at most two
-- events, every value bound as a parameter of its own, as lone_slots.
CREATE TEMP VIEW IF NOT EXISTS lone_finish_slots (
    run_id, owner, epoch, status, state, error, at, wake_at, last_seq,
    seq1, kind1, step1, attempt1, at1, data1, seq2, kind2, step2, attempt2, at2, data2
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;

-- name: finish_slots_trigger
-- As lone_finish_trigger: fenced alike, the run's row updated last alike, and
-- told by the rows it changed alike. The run is looked up once for its
-- events (a join, not a lookup for each), and the reservations are deleted
-- as long as events were inserted (changes(): a commit that finishes a run
-- has at least one), not after looking it up again.
CREATE TEMP TRIGGER IF NOT EXISTS lone_finish_slots_write
INSTEAD OF INSERT ON lone_finish_slots BEGIN
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, e.seq, e.kind, e.step, e.attempt, e.at, e.data
    FROM runs AS r, (
        SELECT NEW.seq1 AS seq, NEW.kind1 AS kind, NEW.step1 AS step,
               NEW.attempt1 AS attempt, NEW.at1 AS at, NEW.data1 AS data
        UNION ALL
        SELECT NEW.seq2, NEW.kind2, NEW.step2, NEW.attempt2, NEW.at2, NEW.data2
        WHERE NEW.seq2 IS NOT NULL
    ) AS e
    WHERE r.id = NEW.run_id AND r.owner = NEW.owner AND r.lease_epoch = NEW.epoch;
    DELETE FROM reservations WHERE run_id = NEW.run_id AND changes() > 0;
    UPDATE runs SET mail = mail
    WHERE id = NEW.run_id AND mail > 0 AND owner = NEW.owner AND lease_epoch = NEW.epoch;
    UPDATE runs SET
        status = NEW.status,
        state = NEW.state,
        state_changes = 0,
        error = NEW.error,
        updated_at = NEW.at,
        wake_at = NEW.wake_at,
        owner = NULL,
        lease_until = NULL,
        last_seq = NEW.last_seq
    WHERE id = NEW.run_id AND owner = NEW.owner AND lease_epoch = NEW.epoch;
END;

-- name: write_lone_finish_slots
INSERT INTO lone_finish_slots VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21
);

-- name: new_slots_view
-- A new run written on its own with at most two events, every value bound
-- as a parameter of its own (sagakit.store.sqlite.writes.encode_lone_create),
-- as lone_slots for a commit.
CREATE TEMP VIEW IF NOT EXISTS lone_new_slots (
    run_id, saga, version, status, state, error, created_at, updated_at,
    owner, lease_epoch, lease_until, wake_at, last_seq,
    seq1, kind1, step1, attempt1, at1, data1, seq2, kind2, step2, attempt2, at2, data2
) AS SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL;

-- name: new_slots_trigger
-- As lone_new_trigger: a run whose id is taken is left as it is, and
-- nothing changes (changes(), inside a trigger, counts the rows of its
-- last statement: the run's insert, while the events' runs).
CREATE TEMP TRIGGER IF NOT EXISTS lone_new_slots_write INSTEAD OF INSERT ON lone_new_slots BEGIN
    INSERT INTO runs (
        id, saga, version, status, state, error, created_at, updated_at,
        owner, lease_epoch, lease_until, wake_at, last_seq
    )
    SELECT NEW.run_id, NEW.saga, NEW.version, NEW.status, NEW.state, NEW.error,
           NEW.created_at, NEW.updated_at, NEW.owner, NEW.lease_epoch, NEW.lease_until,
           NEW.wake_at, NEW.last_seq
    WHERE true
    ON CONFLICT (id) DO NOTHING;
    INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
    SELECT NEW.run_id, NEW.seq1, NEW.kind1, NEW.step1, NEW.attempt1, NEW.at1, NEW.data1
    WHERE changes() > 0
    UNION ALL
    SELECT NEW.run_id, NEW.seq2, NEW.kind2, NEW.step2, NEW.attempt2, NEW.at2, NEW.data2
    WHERE NEW.seq2 IS NOT NULL AND changes() > 0;
END;

-- name: write_lone_new_slots
INSERT INTO lone_new_slots VALUES (
    ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13,
    ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25
);

-- name: run_mail
-- The unread mail count of run ?1.
SELECT mail FROM runs WHERE id = ?1;

-- name: write_batch
-- As the columns of `batch`.
INSERT INTO batch (creates, commits, moves, keeps, finishes, changes)
VALUES (?1, ?2, ?3, ?4, ?5, ?6);

-- name: batch_results
-- What the last batch needs to know, as one row of JSON: [positions of the
-- new runs whose id is taken, [position, unread mail count or null] of the
-- commits fenced out or with mail waiting].
SELECT json_array(
    json((SELECT coalesce(json_group_array(position), '[]') FROM batch_taken)),
    json((
        SELECT coalesce(json_group_array(json_array(position, mail)), '[]')
        FROM batch_commits WHERE mail IS NULL OR mail > 0
    ))
);

-- Rewriting stored JSON in place (Store.rewrite_data), a page at a time in
-- key order, each page in an immediate transaction: the write lock keeps
-- every other writer out between a page's read and its rewrite.

-- name: rewrite_runs_page
SELECT id, state, state_changes FROM runs WHERE id > ? ORDER BY id LIMIT ?;

-- name: rewrite_run
-- The state as a whole: the run's changes are folded into it (and deleted).
UPDATE runs SET state = ?, state_changes = 0 WHERE id = ?;

-- name: events_named_by_changes
-- Of the runs in the JSON array ?1, each whose first state change names one
-- of its events (from_event, migration 0007), and that event's seq.
SELECT run_id, from_event FROM state_changes
WHERE from_event IS NOT NULL AND run_id IN (SELECT value FROM json_each(?1));

-- name: rewrite_runs_of
-- As rewrite_runs_page, for the runs in the JSON array ?1.
SELECT id, state, state_changes FROM runs WHERE id IN (SELECT value FROM json_each(?1)) ORDER BY id;

-- name: rewrite_events_page
SELECT run_id, seq, data FROM events WHERE (run_id, seq) > (?, ?) ORDER BY run_id, seq LIMIT ?;

-- name: rewrite_event
UPDATE events SET data = ? WHERE run_id = ? AND seq = ?;

-- name: rewrite_mail_page
SELECT id, kind, run_id, data FROM mail WHERE id > ? ORDER BY id LIMIT ?;

-- name: rewrite_mail
UPDATE mail SET data = ? WHERE id = ?;

-- Purging settled runs (Store.purge), one batch per immediate transaction.

-- name: purge_runs
-- ?1: a JSON array of statuses; ?2: the cutoff; ?3: the batch size. A run
-- is last changed no earlier than it was created, so "created_at < ?2"
-- holds for every run purged. The scan walks runs_created oldest first and
-- stops at the batch size: "+status" keeps SQLite off runs_status_created,
-- whose several status ranges it cannot read in created_at order: every
-- batch would read and sort every purgeable run, and with a million of them
-- a purge ran 24 times slower, with claims waiting on it (docs/benchmarks.md).
-- A run with a live lease (an operator acting on it) is left.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail, state_changes
FROM runs
WHERE +status IN (SELECT value FROM json_each(?1))
  AND created_at < ?2 AND updated_at < ?2
  AND (owner IS NULL OR lease_until IS NULL OR lease_until < ?2)
ORDER BY created_at, id
LIMIT ?3;

-- name: purge_journals
-- Row by row, not as one JSON text like journals: SQLite writes a REAL into
-- JSON with 15 significant digits, and an archive keeps times as stored.
SELECT run_id, seq, kind, at, step, attempt, data
FROM events WHERE run_id IN (SELECT value FROM json_each(?))
ORDER BY run_id, seq;

-- name: purge_events
DELETE FROM events WHERE run_id IN (SELECT value FROM json_each(?));

-- name: purge_mail
DELETE FROM mail WHERE run_id IN (SELECT value FROM json_each(?));

-- name: purge_reservations
DELETE FROM reservations WHERE run_id IN (SELECT value FROM json_each(?));

-- name: purge_state_changes
DELETE FROM state_changes WHERE run_id IN (SELECT value FROM json_each(?));

-- name: purge_rows
DELETE FROM runs WHERE id IN (SELECT value FROM json_each(?));
