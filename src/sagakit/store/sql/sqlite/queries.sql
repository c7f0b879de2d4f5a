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
-- (sagakit.store.sqlite_writes), its events nested in it; a batch is a JSON
-- array of those arrays. json_extract is used rather than ->> so that SQLite
-- 3.35 (the first with RETURNING) runs them.
--
-- A new run:  [0 id, 1 saga, 2 version, 3 status, 4 state, 5 error,
--              6 created_at, 7 updated_at, 8 owner, 9 lease_epoch,
--              10 lease_until, 11 wake_at, 12 last_seq, 13 events]
-- A commit:   [0 id, 1 owner, 2 epoch, 3 keeps its status, 4 release,
--              5 finished, 6 status, 7 state, 8 error, 9 at, 10 wake_at,
--              11 last seq (null: no events), 12 events]
-- An event:   [0 seq, 1 kind, 2 step, 3 attempt, 4 at, 5 data]
-- State, error and data are JSON values in the array; json_extract gives
-- each back as JSON text, as the columns hold it.

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
-- The events of one write ?1 (a new run or a commit), found at the path ?2.
INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
SELECT json_extract(?1, '$[0]'), json_extract(e.value, '$[0]'), json_extract(e.value, '$[1]'),
       json_extract(e.value, '$[2]'), json_extract(e.value, '$[3]'),
       json_extract(e.value, '$[4]'), json_extract(e.value, '$[5]')
FROM json_each(?1, ?2) AS e;

-- name: commit_run
-- ?1: a commit. Fenced: no row is updated (none returned) unless the lease
-- is still the committer's. Returns the run's unread mail count.
UPDATE runs SET
    status = json_extract(?1, '$[6]'),
    state = json_extract(?1, '$[7]'),
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
-- as the row holds them): those columns are not SET, so SQLite leaves the
-- indexes on them (runs_due, runs_status_created) alone, which it would
-- otherwise rewrite at each commit whatever the values.
UPDATE runs SET
    state = json_extract(?1, '$[7]'),
    error = json_extract(?1, '$[8]'),
    updated_at = json_extract(?1, '$[9]'),
    owner = CASE WHEN json_extract(?1, '$[4]') THEN NULL ELSE owner END,
    lease_until = CASE WHEN json_extract(?1, '$[4]') THEN NULL ELSE lease_until END,
    last_seq = coalesce(json_extract(?1, '$[11]'), last_seq)
WHERE id = json_extract(?1, '$[0]') AND owner = json_extract(?1, '$[1]')
  AND lease_epoch = json_extract(?1, '$[2]')
RETURNING mail;

-- name: get_run
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail
FROM runs WHERE id = ?;

-- name: list_runs
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail
FROM runs
WHERE (:status IS NULL OR status = :status) AND (:saga IS NULL OR saga = :saga)
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset;

-- name: list_runs_by_status
-- A separate text: with "(:status IS NULL OR status = :status)" SQLite scans
-- every run by creation time instead of using runs_status_created, so
-- `sagakit list --status needs_attention` would read a million settled runs.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail
FROM runs
WHERE status = :status AND (:saga IS NULL OR saga = :saga)
ORDER BY created_at DESC, id DESC
LIMIT :limit OFFSET :offset;

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
UPDATE runs SET
    owner = :owner,
    lease_epoch = lease_epoch + 1,
    lease_until = :lease_until,
    wake_at = NULL
WHERE id = :id AND (owner IS NULL OR lease_until IS NULL OR lease_until < :now)
RETURNING id, saga, version, status, state, error, created_at, updated_at,
          owner, lease_epoch, lease_until, wake_at, last_seq, mail;

-- name: due_runs
-- :sagas is NULL (any saga) or a JSON array of [name, version] pairs.
-- The first condition is the predicate of the runs_due index, word for word,
-- so SQLite knows the index holds every row that can match; the third one is
-- the due rule itself (Store.claim_due), which the predicate merely widens.
SELECT id FROM runs INDEXED BY runs_due
WHERE (status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0)
  AND (owner IS NULL OR lease_until IS NULL OR lease_until < :now)
  AND (mail > 0 OR wake_at <= :now
       OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
  AND (:sagas IS NULL OR EXISTS (
      SELECT 1 FROM json_each(:sagas) AS s
      WHERE json_extract(s.value, '$[0]') = runs.saga
        AND json_extract(s.value, '$[1]') = runs.version
  ))
ORDER BY coalesce(wake_at, created_at)
LIMIT :limit;

-- name: renew
UPDATE runs SET lease_until = ? WHERE id = ? AND owner = ? AND lease_epoch = ?;

-- name: release
UPDATE runs SET owner = NULL, lease_until = NULL
WHERE id = ? AND owner = ? AND lease_epoch = ?;

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

-- name: release_reservations
-- :names is NULL (all of the run's reservations) or a JSON array of names.
DELETE FROM reservations
WHERE run_id = :run_id
  AND (:names IS NULL OR name IN (SELECT value FROM json_each(:names)));

-- name: reservations
SELECT name, run_id, expires_at FROM reservations
WHERE (:run_id IS NULL OR run_id = :run_id) AND (:now IS NULL OR expires_at > :now)
ORDER BY name;

-- The batch forms of the writes above let a group commit of any size cost a
-- handful of statements: each takes the batch as one JSON array (?1) and
-- SQLite unpacks it with json_each, and what a batch needs to know comes
-- back as one row of JSON, usually an empty array. Few statements and few
-- rows matter as much as fast ones: sqlite3 releases the GIL around every
-- step of a statement and must win it back from the event loop's thread
-- afterwards, so a batch of a thousand small steps would mostly wait for it.

-- name: taken_runs
-- The positions in ?1 (new runs) of those whose id is taken, as a JSON array.
SELECT coalesce(json_group_array(c.key), '[]')
FROM json_each(?1) AS c JOIN runs AS r ON r.id = json_extract(c.value, '$[0]');

-- name: insert_runs
-- ?1: new runs whose ids are free (see taken_runs).
INSERT INTO runs (
    id, saga, version, status, state, error, created_at, updated_at,
    owner, lease_epoch, lease_until, wake_at, last_seq
)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'),
       json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'),
       json_extract(value, '$[6]'), json_extract(value, '$[7]'), json_extract(value, '$[8]'),
       json_extract(value, '$[9]'), json_extract(value, '$[10]'), json_extract(value, '$[11]'),
       json_extract(value, '$[12]')
FROM json_each(?1) WHERE true
ON CONFLICT (id) DO NOTHING;

-- name: insert_events
-- The events of every write in ?1 (new runs or commits), each at the path ?2.
INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
SELECT json_extract(c.value, '$[0]'), json_extract(e.value, '$[0]'),
       json_extract(e.value, '$[1]'), json_extract(e.value, '$[2]'),
       json_extract(e.value, '$[3]'), json_extract(e.value, '$[4]'),
       json_extract(e.value, '$[5]')
FROM json_each(?1) AS c, json_each(c.value, ?2) AS e;

-- name: fenced_runs
-- Of the commits in ?1, those that are not plain, as a JSON array of
-- [position, unread mail count]: the count is null for a commit that the
-- fence refuses (the lease is no longer the committer's), and only runs with
-- mail waiting are listed otherwise. Read under the write lock just before
-- commit_runs, whose WHERE clause is the same fence.
SELECT coalesce(json_group_array(json_array(c.key, r.mail)), '[]')
FROM json_each(?1) AS c
LEFT JOIN runs AS r ON r.id = json_extract(c.value, '$[0]')
    AND r.owner = json_extract(c.value, '$[1]') AND r.lease_epoch = json_extract(c.value, '$[2]')
WHERE r.id IS NULL OR r.mail > 0;

-- name: commit_runs
-- commit_run for each commit in ?1 that moves its run's status or timer.
UPDATE runs SET
    status = json_extract(c.value, '$[6]'),
    state = json_extract(c.value, '$[7]'),
    error = json_extract(c.value, '$[8]'),
    updated_at = json_extract(c.value, '$[9]'),
    wake_at = json_extract(c.value, '$[10]'),
    owner = CASE WHEN json_extract(c.value, '$[4]') THEN NULL ELSE owner END,
    lease_until = CASE WHEN json_extract(c.value, '$[4]') THEN NULL ELSE lease_until END,
    last_seq = coalesce(json_extract(c.value, '$[11]'), last_seq)
FROM json_each(?1) AS c
WHERE runs.id = json_extract(c.value, '$[0]') AND runs.owner = json_extract(c.value, '$[1]')
  AND runs.lease_epoch = json_extract(c.value, '$[2]') AND NOT json_extract(c.value, '$[3]');

-- name: commit_runs_kept
-- commit_run_kept for each commit in ?1 that keeps its run's status and timer.
UPDATE runs SET
    state = json_extract(c.value, '$[7]'),
    error = json_extract(c.value, '$[8]'),
    updated_at = json_extract(c.value, '$[9]'),
    owner = CASE WHEN json_extract(c.value, '$[4]') THEN NULL ELSE owner END,
    lease_until = CASE WHEN json_extract(c.value, '$[4]') THEN NULL ELSE lease_until END,
    last_seq = coalesce(json_extract(c.value, '$[11]'), last_seq)
FROM json_each(?1) AS c
WHERE runs.id = json_extract(c.value, '$[0]') AND runs.owner = json_extract(c.value, '$[1]')
  AND runs.lease_epoch = json_extract(c.value, '$[2]') AND json_extract(c.value, '$[3]');

-- name: free_reservations_of
-- The reservations of the runs whose commit in ?1 finishes them.
DELETE FROM reservations WHERE run_id IN (
    SELECT json_extract(value, '$[0]') FROM json_each(?1) WHERE json_extract(value, '$[5]')
);
