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

-- name: insert_run
INSERT INTO runs (
    id, saga, version, status, state, error, created_at, updated_at,
    owner, lease_epoch, lease_until, wake_at, last_seq
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO NOTHING;

-- name: insert_event
INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
VALUES (?, ?, ?, ?, ?, ?, ?);

-- name: commit_run
-- ?1 status, ?2 state, ?3 error, ?4 at, ?5 wake_at, ?6 release,
-- ?7 last seq (NULL: no events), ?8 id, ?9 owner, ?10 epoch.
-- Fenced: no row is updated (none returned) unless the lease is still the
-- committer's. Returns the run's unread mail count.
UPDATE runs SET
    status = ?1,
    state = ?2,
    error = ?3,
    updated_at = ?4,
    wake_at = ?5,
    owner = CASE WHEN ?6 THEN NULL ELSE owner END,
    lease_until = CASE WHEN ?6 THEN NULL ELSE lease_until END,
    last_seq = coalesce(?7, last_seq)
WHERE id = ?8 AND owner = ?9 AND lease_epoch = ?10
RETURNING mail;

-- name: commit_run_kept
-- commit_run for a commit that keeps the run's status and timer (?1 and ?5
-- are as the row holds them): those columns are not SET, so SQLite leaves the
-- indexes on them (runs_due, runs_status_created) alone, which would otherwise
-- be rewritten at each commit whatever the values.
UPDATE runs SET
    state = ?2,
    error = ?3,
    updated_at = ?4,
    owner = CASE WHEN ?6 THEN NULL ELSE owner END,
    lease_until = CASE WHEN ?6 THEN NULL ELSE lease_until END,
    last_seq = coalesce(?7, last_seq)
WHERE id = ?8 AND owner = ?9 AND lease_epoch = ?10
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

-- The batch forms of insert_run, commit_run and insert_event below let a
-- group commit of any size cost a handful of statements: each takes its rows
-- as one JSON array (?1) and SQLite unpacks it with json_each, and what a
-- batch needs to know comes back as one row of JSON. Few statements and few
-- rows matter as much as fast ones: sqlite3 releases the GIL around every
-- step of a statement and must win it back from the event loop's thread
-- afterwards, so a batch of a thousand small steps would mostly wait for it.

-- name: taken_runs
-- The ids among insert_runs' rows that are taken already, as a JSON array.
SELECT json_group_array(r.id)
FROM json_each(?1) AS c JOIN runs AS r ON r.id = c.value->>0;

-- name: insert_runs
-- Rows in insert_run's column order; a run whose id is taken is left as it is.
INSERT INTO runs (
    id, saga, version, status, state, error, created_at, updated_at,
    owner, lease_epoch, lease_until, wake_at, last_seq
)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6,
       value->>7, value->>8, value->>9, value->>10, value->>11, value->>12
FROM json_each(?1) WHERE true
ON CONFLICT (id) DO NOTHING;

-- name: fenced_runs
-- Of commit_runs' rows, those whose lease is still the committer's, as a JSON
-- array of [id, unread mail count]. Read under the write lock just before
-- commit_runs, whose WHERE clause is the same fence.
SELECT json_group_array(json_array(r.id, r.mail))
FROM json_each(?1) AS c
JOIN runs AS r ON r.id = c.value->>7 AND r.owner = c.value->>8 AND r.lease_epoch = c.value->>9;

-- name: commit_runs
-- Rows in commit_run's parameter order, then whether the commit keeps its
-- status (those are left to commit_runs_kept); fenced as commit_run is.
UPDATE runs SET
    status = c.value->>0,
    state = c.value->>1,
    error = c.value->>2,
    updated_at = c.value->>3,
    wake_at = c.value->>4,
    owner = CASE WHEN c.value->>5 THEN NULL ELSE owner END,
    lease_until = CASE WHEN c.value->>5 THEN NULL ELSE lease_until END,
    last_seq = coalesce(c.value->>6, last_seq)
FROM json_each(?1) AS c
WHERE runs.id = c.value->>7 AND runs.owner = c.value->>8 AND runs.lease_epoch = c.value->>9
  AND NOT c.value->>10;

-- name: commit_runs_kept
-- commit_runs for the rows of commits that keep their run's status and timer
-- (as commit_run_kept).
UPDATE runs SET
    state = c.value->>1,
    error = c.value->>2,
    updated_at = c.value->>3,
    owner = CASE WHEN c.value->>5 THEN NULL ELSE owner END,
    lease_until = CASE WHEN c.value->>5 THEN NULL ELSE lease_until END,
    last_seq = coalesce(c.value->>6, last_seq)
FROM json_each(?1) AS c
WHERE runs.id = c.value->>7 AND runs.owner = c.value->>8 AND runs.lease_epoch = c.value->>9
  AND c.value->>10;

-- name: insert_events
-- Rows in insert_event's column order.
INSERT INTO events (run_id, seq, kind, step, attempt, at, data)
SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6
FROM json_each(?1);

-- name: free_reservations_of
-- ?1: a JSON array of run ids.
DELETE FROM reservations WHERE run_id IN (SELECT value FROM json_each(?1));
