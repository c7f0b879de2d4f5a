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
ORDER BY coalesce(wake_at, updated_at)
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
