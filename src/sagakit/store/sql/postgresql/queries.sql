-- Named queries of the PostgreSQL store, loaded by sagakit.store.sql.load_queries.
-- Each block starts with "-- name: NAME". {schema} is replaced by the store's
-- schema name (a checked identifier) and {channel} by its NOTIFY channel when
-- the store opens; {changes_of:ALIAS} by the fragment "changes_of" for the
-- run that ALIAS names (see sagakit.store.sql); parameters are psycopg
-- placeholders, never spliced text.
-- Run columns are always selected in the order of RunRecord's fields.
-- Batched writes pass one array per column and unnest them, so a batch of a
-- thousand commits is three statements, not three thousand.
-- Those arrays are sent in binary (%(name)b placeholders): each column is a
-- typed list of sagakit.store.postgresql.arrays, dumped in one pass, where a
-- text array literal would be quoted element by element on both sides.

-- name: create_schema
-- Only when it is missing: CREATE SCHEMA IF NOT EXISTS needs the CREATE
-- privilege on the database even when the schema exists, and a role that
-- owns only its schema (docs/postgresql.md, least privilege) has not got it.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = '{schema}') THEN
        CREATE SCHEMA IF NOT EXISTS {schema};
    END IF;
END
$$;

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS {schema}.schema_version (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);

-- name: schema_version_exists
-- A catalog query, not to_regclass(): that one may answer from a cache that
-- still says "absent" after another process created the table.
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_tables
    WHERE schemaname = '{schema}' AND tablename = 'schema_version'
);

-- name: get_schema_version
SELECT version FROM {schema}.schema_version WHERE id = 1;

-- name: set_schema_version
INSERT INTO {schema}.schema_version (id, version) VALUES (1, %s)
ON CONFLICT (id) DO UPDATE SET version = excluded.version;

-- name: migration_lock
-- Several processes may open a new database at once: one migrates, the
-- others wait and then find the schema current.
SELECT pg_advisory_xact_lock(hashtext('sagakit:{schema}'));

-- name: insert_runs
-- One statement (one round trip, one transaction): the new runs, their first
-- events, and a NOTIFY when a run nobody owns is waiting for a worker.
WITH inserted AS (
    INSERT INTO {schema}.runs (
        id, saga, version, status, state, error, created_at, updated_at,
        owner, lease_epoch, lease_until, wake_at, last_seq
    )
    SELECT id, saga, version, status, state::jsonb, error::jsonb, created_at, updated_at,
           owner, lease_epoch, lease_until, wake_at, last_seq
    FROM unnest(
        %(id)b::text[], %(saga)b::text[], %(version)b::text[], %(status)b::text[],
        %(state)b::text[], %(error)b::text[], %(created_at)b::float8[],
        %(updated_at)b::float8[], %(owner)b::text[], %(lease_epoch)b::int8[],
        %(lease_until)b::float8[], %(wake_at)b::float8[], %(last_seq)b::int8[]
    ) AS u(id, saga, version, status, state, error, created_at, updated_at,
           owner, lease_epoch, lease_until, wake_at, last_seq)
    ON CONFLICT (id) DO NOTHING
    RETURNING id, owner IS NULL AND status IN ('pending', 'running', 'compensating') AS due
),
journal AS (
    INSERT INTO {schema}.events (run_id, seq, kind, step, attempt, at, data)
    SELECT e.run_id, e.seq, e.kind, e.step, e.attempt, e.at, e.data::jsonb
    FROM unnest(
        %(e_run_id)b::text[], %(e_seq)b::int8[], %(e_kind)b::text[], %(e_step)b::text[],
        %(e_attempt)b::int4[], %(e_at)b::float8[], %(e_data)b::text[]
    ) AS e(run_id, seq, kind, step, attempt, at, data)
    JOIN inserted ON inserted.id = e.run_id
),
woken AS (
    SELECT pg_notify('{channel}', '') FROM inserted WHERE due LIMIT 1
)
SELECT id, (SELECT count(*) FROM woken) FROM inserted;

-- name: commit_runs
-- One statement (one round trip, one transaction) for a whole batch of
-- commits; a local transaction runs it too, for a batch of one. Fenced: a
-- run's row is updated, its events appended and its mail deleted only if the
-- lease is still the committer's and the events follow the journal's last
-- one; the rows returned are the commits that took effect, each saying
-- whether unread mail still waits for its run. A NOTIFY goes out when a
-- commit hands back a run that any worker may take at once.
--
-- All the CTEs see one snapshot, so the UPDATE cannot see what the mail
-- DELETE removed: the fence is checked first, under a row lock (fenced),
-- then the mail is deleted, then the row is updated with the count of mail
-- rows actually deleted. A retry of a commit that already landed deletes
-- nothing more, so runs.mail is never lowered twice.
WITH u AS (
    SELECT * FROM unnest(
        %(id)b::text[], %(owner)b::text[], %(epoch)b::int8[], %(status)b::text[],
        %(state)b::text[], %(error)b::text[], %(at)b::float8[], %(wake_at)b::float8[],
        %(release)b::bool[], %(first_seq)b::int8[], %(last_seq)b::int8[],
        %(notify)b::bool[], %(finished)b::bool[], %(change)b::text[], %(clears)b::bool[]
    ) AS u(id, owner, epoch, status, state, error, at, wake_at, release, first_seq,
           last_seq, notify, finished, change, clears)
),
fenced AS (
    -- Locks taken in id order, so two batches never wait for each other in a
    -- cycle; under READ COMMITTED the fence is checked on the locked version.
    -- The rows are found by their ids (an index condition on the primary
    -- key): the plan prepared once for every batch otherwise merge-joined
    -- on the owner, reading every run any worker holds (the partial index
    -- runs_owner, which "r.owner = u.owner" lets it use) for each batch.
    -- A commit's owner is never NULL, so IS NOT DISTINCT FROM is = here.
    -- Joined with the four columns the fence reads, not with u: a lock (as
    -- an UPDATE) copies each row of every other relation it joins whole, for
    -- the recheck of a row changed while it waited.
    SELECT r.id FROM {schema}.runs AS r
    JOIN unnest(%(id)b::text[], %(owner)b::text[], %(epoch)b::int8[], %(first_seq)b::int8[])
        AS f(id, owner, epoch, first_seq) ON r.id = f.id
    WHERE r.id = ANY(%(id)b::text[])
      AND f.owner IS NOT NULL AND r.owner IS NOT DISTINCT FROM f.owner
      AND r.lease_epoch = f.epoch
      AND (f.first_seq IS NULL OR r.last_seq = f.first_seq - 1)
    ORDER BY r.id
    FOR UPDATE OF r
),
read AS (
    DELETE FROM {schema}.mail AS m
    USING unnest(%(m_run_id)b::text[], %(m_id)b::int8[]) AS x(run_id, id)
    WHERE m.id = x.id AND m.run_id = x.run_id AND x.run_id IN (SELECT id FROM fenced)
    RETURNING m.run_id
),
counted AS MATERIALIZED (
    -- The commits with the count of mail rows each deleted: the UPDATE's one
    -- other relation, so the one whose rows it copies (see fenced).
    SELECT u.*, c.n AS read
    FROM u LEFT JOIN (SELECT run_id, count(*) AS n FROM read GROUP BY run_id) AS c
        ON c.run_id = u.id
),
updated AS (
    UPDATE {schema}.runs AS r SET
        status = u.status,
        -- A change leaves the state's value as it is (its TOAST is not
        -- written again) and is added to the run's state_changes below.
        state = CASE WHEN u.change IS NULL THEN u.state::jsonb ELSE r.state END,
        state_changes = CASE WHEN u.change IS NULL THEN 0 ELSE 1 END,
        error = u.error::jsonb,
        updated_at = u.at,
        wake_at = u.wake_at,
        owner = CASE WHEN u.release THEN NULL ELSE r.owner END,
        lease_until = CASE WHEN u.release THEN NULL ELSE r.lease_until END,
        last_seq = coalesce(u.last_seq, r.last_seq),
        mail = r.mail - coalesce(u.read, 0)
    FROM counted AS u
    -- The fenced runs by an array of their ids, and the batch hash-joined
    -- once. Joined with fenced, which the generic plan guesses one row long,
    -- the update read the batch again for each fenced run, copying each of
    -- its rows whole (see fenced): 2,500 copies for 50 commits, an eighth of
    -- the server's CPU. The deletions below take the ids as an array too.
    WHERE r.id = u.id AND r.id = ANY(ARRAY(SELECT id FROM fenced))
    -- RETURNING sees the row as updated: r.mail is the count left unread.
    RETURNING r.id, r.mail > 0 AS has_mail, u.finished,
              u.notify OR (u.release AND r.mail > 0) AS notify, u.clears
),
cleared AS (
    DELETE FROM {schema}.state_changes AS c
    WHERE c.run_id = ANY(ARRAY(SELECT id FROM updated WHERE clears))
),
changed AS (
    INSERT INTO {schema}.state_changes (run_id, seq, change)
    SELECT u.id, u.last_seq, u.change::jsonb FROM u JOIN updated ON updated.id = u.id
    WHERE u.change IS NOT NULL AND u.last_seq IS NOT NULL
),
freed AS (
    DELETE FROM {schema}.reservations AS s
    WHERE s.run_id = ANY(ARRAY(SELECT id FROM updated WHERE finished))
),
journal AS (
    INSERT INTO {schema}.events (run_id, seq, kind, step, attempt, at, data)
    SELECT e.run_id, e.seq, e.kind, e.step, e.attempt, e.at, e.data::jsonb
    FROM unnest(
        %(e_run_id)b::text[], %(e_seq)b::int8[], %(e_kind)b::text[], %(e_step)b::text[],
        %(e_attempt)b::int4[], %(e_at)b::float8[], %(e_data)b::text[]
    ) AS e(run_id, seq, kind, step, attempt, at, data)
    JOIN updated ON updated.id = e.run_id
),
woken AS (
    SELECT pg_notify('{channel}', '') FROM updated WHERE notify LIMIT 1
)
SELECT id, has_mail, (SELECT count(*) FROM woken) FROM updated;

-- A write's big parts, each sent on its own in place of the placeholder
-- the arrays held (sagakit.store.postgresql.writes.BIG), in the write's
-- transaction, once it took effect.

-- name: big_pieces_table
-- A big part's pieces, sent one statement each (sagakit.store.postgresql.writes.write_big):
-- the session's own table, left empty after each part. Emptied by a
-- truncation at each commit too: a row deleted keeps its space (its piece,
-- TOASTed) until a VACUUM, which autovacuum never runs on a temporary table,
-- and a pooled session would grow by every big part it ever wrote.
CREATE TEMPORARY TABLE IF NOT EXISTS sagakit_big_pieces (n integer PRIMARY KEY, piece text NOT NULL)
ON COMMIT DELETE ROWS;

-- name: big_pieces_allowed
-- Whether the session may use the pieces table: a role may be refused
-- temporary tables (TEMPORARY revoked from PUBLIC), and then sends each part
-- whole (the _whole statements below).
SELECT to_regclass('pg_temp.sagakit_big_pieces') IS NOT NULL
       OR has_database_privilege(current_database(), 'TEMPORARY');

-- name: big_piece
INSERT INTO pg_temp.sagakit_big_pieces (n, piece) VALUES (%s, %s);

-- name: big_pieces_clear
DELETE FROM pg_temp.sagakit_big_pieces;

-- name: big_state
UPDATE {schema}.runs
SET state = (SELECT string_agg(piece, '' ORDER BY n) FROM pg_temp.sagakit_big_pieces)::jsonb
WHERE id = %s;

-- name: big_change
UPDATE {schema}.state_changes
SET change = (SELECT string_agg(piece, '' ORDER BY n) FROM pg_temp.sagakit_big_pieces)::jsonb
WHERE run_id = %s AND seq = %s;

-- name: big_event_data_around
-- The data of a new run's event that holds its state first: the text before
-- the state, the state's pieces (sent for big_state), then the text after it.
UPDATE {schema}.events
SET data = (%s || (SELECT string_agg(piece, '' ORDER BY n) FROM pg_temp.sagakit_big_pieces)
            || %s)::jsonb
WHERE run_id = %s AND seq = %s;

-- name: created_change
-- A big new run's first state change (the keys its first commit set over
-- the state its run_started event holds, which its row holds).
WITH added AS (
    INSERT INTO {schema}.state_changes (run_id, seq, change)
    SELECT %s, %s, (SELECT string_agg(piece, '' ORDER BY n) FROM pg_temp.sagakit_big_pieces)::jsonb
    RETURNING run_id
)
UPDATE {schema}.runs SET state_changes = 1 FROM added WHERE runs.id = added.run_id;

-- name: big_event_data
UPDATE {schema}.events
SET data = (SELECT string_agg(piece, '' ORDER BY n) FROM pg_temp.sagakit_big_pieces)::jsonb
WHERE run_id = %s AND seq = %s;

-- The same statements, each with its part whole (big_pieces_allowed).

-- name: big_state_whole
UPDATE {schema}.runs SET state = %(text)s::jsonb WHERE id = %(w0)s;

-- name: big_change_whole
UPDATE {schema}.state_changes SET change = %(text)s::jsonb
WHERE run_id = %(w0)s AND seq = %(w1)s;

-- name: big_event_data_around_whole
UPDATE {schema}.events SET data = (%(w0)s || %(text)s || %(w1)s)::jsonb
WHERE run_id = %(w2)s AND seq = %(w3)s;

-- name: created_change_whole
WITH added AS (
    INSERT INTO {schema}.state_changes (run_id, seq, change)
    SELECT %(w0)s, %(w1)s, %(text)s::jsonb
    RETURNING run_id
)
UPDATE {schema}.runs SET state_changes = 1 FROM added WHERE runs.id = added.run_id;

-- name: big_event_data_whole
UPDATE {schema}.events SET data = %(text)s::jsonb WHERE run_id = %(w0)s AND seq = %(w1)s;

-- name: fence_state
-- Why commits were not written: read after the batch, for those runs only.
SELECT id, owner, lease_epoch, last_seq, mail FROM {schema}.runs WHERE id = ANY(%s::text[]);

-- name: notify
SELECT pg_notify('{channel}', '');

-- name: changes_of
-- Not a query: the column of a run's state changes, in order (NULL: none),
-- the 15th of every query that returns runs, as {changes_of:ALIAS}.
CASE WHEN {alias}.state_changes > 0 THEN (
    SELECT jsonb_agg(c.change ORDER BY c.seq) FROM {schema}.state_changes AS c
    WHERE c.run_id = {alias}.id) END

-- name: claimed_changes
-- The state of runs just claimed that had state changes, with those
-- changes, read together by a statement of their own: a claim that waited
-- for a run's row lock returns the row as its writer left it, but a
-- subquery of its RETURNING reads the state changes as they were when the
-- claim began (its snapshot), which may be older. Read again, row and
-- changes come from one snapshot, whatever was written since (the old
-- owner is fenced out, but a key rotation may fold the changes in).
SELECT r.id, r.state, {changes_of:r} FROM {schema}.runs AS r
WHERE r.id = ANY(%s::text[]);

-- name: get_run
SELECT id, saga, version, status,
       CASE WHEN pg_column_size(state) < %(big)s THEN state END,
       error, created_at, updated_at, owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs},
       pg_column_size(state) >= %(big)s
FROM {schema}.runs WHERE id = %(id)s;

-- name: state_pieces
-- get_run leaves a state out (NULL) if it is stored in big (bytes) or more,
-- which its last column then says: such a state is read by this query, as
-- UTF-8 JSON text in pieces of piece bytes, in order (libpq holds a row
-- whole in a buffer that it keeps at its largest for the connection's life).
SELECT substring(s.text FROM i FOR %(piece)s)
FROM (SELECT convert_to(state::text, 'UTF8') AS text FROM {schema}.runs WHERE id = %(id)s) AS s,
     generate_series(1, octet_length(s.text), %(piece)s) AS i
ORDER BY i;

-- name: get_runs
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs WHERE id = ANY(%s::text[]);

-- name: list_runs
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(saga)s::text IS NULL OR saga = %(saga)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_runs_by_status
-- A separate text so that the planner uses runs_status_created.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE status = %(status)s AND (%(saga)s::text IS NULL OR saga = %(saga)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: page_runs
-- Store.page_runs: a page of runs after a cursor (%(at)s, %(id)s), newest
-- first. The cursor is one row comparison, and every bound a constant
-- (coalesce to an infinity rather than "IS NULL OR"), so the planner reads
-- one range of runs_created (created_at, id) backwards and stops at the
-- limit: a deep page costs what the first does, and nothing is sorted.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE (created_at, id) < (coalesce(%(at)s::float8, 'infinity'), coalesce(%(id)s::text, ''))
  AND created_at >= coalesce(%(since)s::float8, '-infinity')
  AND created_at < coalesce(%(until)s::float8, 'infinity')
  AND (%(saga)s::text IS NULL OR saga = %(saga)s)
  AND (%(version)s::text IS NULL OR version = %(version)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: page_runs_by_status
-- The same on runs_status_created (status, created_at, id), for one status.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE status = %(status)s AND (created_at, id) < (coalesce(%(at)s::float8, 'infinity'), coalesce(%(id)s::text, ''))
  AND created_at >= coalesce(%(since)s::float8, '-infinity')
  AND created_at < coalesce(%(until)s::float8, 'infinity')
  AND (%(saga)s::text IS NULL OR saga = %(saga)s)
  AND (%(version)s::text IS NULL OR version = %(version)s)
ORDER BY created_at DESC, id DESC
LIMIT %(limit)s;

-- name: page_runs_newer
-- The page just newer than a cursor (Store.page_runs' ``before``): oldest
-- first, the store turns it around.
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE (created_at, id) > (coalesce(%(at)s::float8, '-infinity'), coalesce(%(id)s::text, ''))
  AND created_at >= coalesce(%(since)s::float8, '-infinity')
  AND created_at < coalesce(%(until)s::float8, 'infinity')
  AND (%(saga)s::text IS NULL OR saga = %(saga)s)
  AND (%(version)s::text IS NULL OR version = %(version)s)
ORDER BY created_at ASC, id ASC
LIMIT %(limit)s;

-- name: page_runs_newer_by_status
SELECT id, saga, version, status, state, error, created_at, updated_at,
       owner, lease_epoch, lease_until, wake_at, last_seq, mail,
       {changes_of:runs}
FROM {schema}.runs
WHERE status = %(status)s AND (created_at, id) > (coalesce(%(at)s::float8, '-infinity'), coalesce(%(id)s::text, ''))
  AND created_at >= coalesce(%(since)s::float8, '-infinity')
  AND created_at < coalesce(%(until)s::float8, 'infinity')
  AND (%(saga)s::text IS NULL OR saga = %(saga)s)
  AND (%(version)s::text IS NULL OR version = %(version)s)
ORDER BY created_at ASC, id ASC
LIMIT %(limit)s;

-- name: count_runs
-- Store.count_runs: runs by saga and status, in one pass over the table or
-- over the index runs_saga_status (the planner's choice).
SELECT saga, status, count(*) FROM {schema}.runs GROUP BY saga, status;

-- name: journals
SELECT run_id, seq, kind, at, step, attempt, data
FROM {schema}.events WHERE run_id = ANY(%s::text[]) ORDER BY run_id, seq;

-- name: journal
SELECT run_id, seq, kind, at, step, attempt, data
FROM {schema}.events WHERE run_id = %s AND seq > %s ORDER BY seq;

-- name: claim
-- A run that needs attention keeps its timer, which is its owed alert: a
-- claimer that dies before delivering it leaves it due for the next one.
-- %(db_clock)s: leases are taken and judged on the database's clock (the
-- statement's start), for %(lease_until)s - %(now)s seconds, so that a host
-- whose clock runs ahead cannot take a live lease; otherwise on the caller's.
-- Its 15th column is how many state changes the run has: they are read by
-- claimed_changes, after (as for claim_due and claim_held).
WITH clock AS (
    SELECT CASE WHEN %(db_clock)s THEN extract(epoch FROM statement_timestamp())::float8
                ELSE %(now)s::float8 END AS now
)
UPDATE {schema}.runs SET
    owner = %(owner)s,
    lease_epoch = lease_epoch + 1,
    lease_until = CASE WHEN %(db_clock)s THEN clock.now + (%(lease_until)s - %(now)s)
                       ELSE %(lease_until)s END,
    wake_at = CASE WHEN status = 'needs_attention' THEN wake_at END
FROM clock
WHERE id = %(id)s AND (owner IS NULL OR lease_until IS NULL OR lease_until < clock.now)
RETURNING id, saga, version, status, state, error, created_at, updated_at,
          owner, lease_epoch, lease_until, wake_at, last_seq, mail,
          runs.state_changes;

-- name: backlog_attention
-- Store.backlog: runs that need attention by saga, and how many of them are
-- owed an alert (their timer set). Uses runs_status_created.
SELECT saga, count(*), count(wake_at) FROM {schema}.runs
WHERE status = 'needs_attention'
GROUP BY saga;

-- name: backlog_due
-- Store.backlog: the runs claim_due would claim (any saga), counted, and
-- when the oldest became due. The same conditions, on the same index; leases
-- on the database's clock with %(db_clock)s, as claim_due.
SELECT count(*), min(coalesce(wake_at, created_at)) FROM {schema}.runs
WHERE (status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0)
  AND (mail > 0
       OR wake_at <= %(now)s
       OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
  AND (lease_until IS NULL OR lease_until < (
      CASE WHEN %(db_clock)s THEN extract(epoch FROM statement_timestamp())::float8
           ELSE %(now)s::float8 END));

-- name: claim_due
-- Due: mail waits, or the timer (wake_at) passed whatever the status, or the
-- run is active with no timer. The first condition repeats the predicate of
-- the partial index runs_due word for word, so that the planner uses it (it
-- is implied by the second, but the planner need not prove that). SKIP
-- LOCKED: workers claiming at the same moment each take different runs
-- instead of queueing behind one another's row locks. due_at is returned
-- because UPDATE ... RETURNING has no order of its own. Leases on the
-- database's clock with %(db_clock)s (see claim); timers (wake_at) are
-- written from the callers' clocks and compared with the caller's.
WITH clock AS (
    SELECT CASE WHEN %(db_clock)s THEN extract(epoch FROM statement_timestamp())::float8
                ELSE %(now)s::float8 END AS now
),
due AS (
    SELECT id, coalesce(wake_at, created_at) AS due_at FROM {schema}.runs
    WHERE (status IN ('pending', 'running', 'compensating') OR wake_at IS NOT NULL OR mail > 0)
      AND (mail > 0
           OR wake_at <= %(now)s
           OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
      AND (lease_until IS NULL OR lease_until < (SELECT now FROM clock))
      AND (%(any_saga)s OR (saga, version) IN (
          SELECT * FROM unnest(%(names)s::text[], %(versions)s::text[])
      ))
    ORDER BY coalesce(wake_at, created_at)
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.runs AS r SET
    owner = %(owner)s,
    lease_epoch = r.lease_epoch + 1,
    lease_until = CASE WHEN %(db_clock)s THEN clock.now + (%(lease_until)s - %(now)s)
                       ELSE %(lease_until)s END,
    wake_at = CASE WHEN r.status = 'needs_attention' THEN r.wake_at END
FROM due, clock WHERE r.id = due.id
  -- The rows by their ids (the primary key), not a hash join over a scan
  -- of the whole table, which the planner picks while it is small.
  AND r.id = ANY(ARRAY(SELECT id FROM due))
RETURNING r.id, r.saga, r.version, r.status, r.state, r.error, r.created_at, r.updated_at,
          r.owner, r.lease_epoch, r.lease_until, r.wake_at, r.last_seq, r.mail,
          r.state_changes, due.due_at;

-- name: owners
-- Store.owners: every owner named by a lease, from the partial index runs_owner.
SELECT DISTINCT owner FROM {schema}.runs WHERE owner IS NOT NULL;

-- name: claim_held
-- Store.claim_held: the runs one of %(owners)s holds, lapsed or not, that
-- claim_due would take were the lease lapsed (the due rule), claimed as
-- claim_due claims (epoch bumped: an owner somehow alive is fenced out).
-- Under READ COMMITTED, FOR UPDATE checks the owner again on the row as
-- locked, so a run another process claimed meanwhile is left; SKIP LOCKED:
-- two processes taking over at once each take different runs.
WITH clock AS (
    SELECT CASE WHEN %(db_clock)s THEN extract(epoch FROM statement_timestamp())::float8
                ELSE %(now)s::float8 END AS now
),
held AS (
    SELECT id FROM {schema}.runs
    WHERE owner IS NOT NULL AND owner = ANY(%(owners)s::text[])
      AND (mail > 0 OR wake_at <= %(now)s
           OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')))
      AND (%(any_saga)s OR (saga, version) IN (
          SELECT * FROM unnest(%(names)s::text[], %(versions)s::text[])
      ))
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.runs AS r SET
    owner = %(owner)s,
    lease_epoch = r.lease_epoch + 1,
    lease_until = CASE WHEN %(db_clock)s THEN clock.now + (%(lease_until)s - %(now)s)
                       ELSE %(lease_until)s END,
    wake_at = CASE WHEN r.status = 'needs_attention' THEN r.wake_at END
FROM held, clock WHERE r.id = held.id
  AND r.id = ANY(ARRAY(SELECT id FROM held))  -- by the primary key (see claim_due)
RETURNING r.id, r.saga, r.version, r.status, r.state, r.error, r.created_at, r.updated_at,
          r.owner, r.lease_epoch, r.lease_until, r.wake_at, r.last_seq, r.mail,
          r.state_changes;

-- name: renew
-- With %(db_clock)s and the caller's %(now)s, for %(lease_until)s - %(now)s
-- seconds from the database's clock (see claim).
UPDATE {schema}.runs AS r SET lease_until = CASE
    WHEN %(db_clock)s AND %(now)s::float8 IS NOT NULL
    THEN extract(epoch FROM statement_timestamp())::float8 + (%(lease_until)s - %(now)s::float8)
    ELSE %(lease_until)s END
FROM unnest(%(id)s::text[], %(owner)s::text[], %(epoch)s::int8[]) AS u(id, owner, epoch)
WHERE r.id = u.id AND r.owner = u.owner AND r.lease_epoch = u.epoch
RETURNING r.id;

-- name: release
-- Returns whether the run is due at once (see claim_due), to wake a worker.
-- %(hold)s: NULL, or the time the run is held back until (Store.release): it
-- is kept as lease_until with no owner, which claim_due honours and claim
-- does not.
UPDATE {schema}.runs SET
    owner = NULL,
    lease_until = %(hold)s::float8,
    wake_at = coalesce(%(hold)s::float8, wake_at)
WHERE id = %(id)s AND owner = %(owner)s AND lease_epoch = %(epoch)s
RETURNING %(hold)s::float8 IS NULL
    AND (mail > 0 OR (wake_at IS NULL AND status IN ('pending', 'running', 'compensating')));

-- name: post
-- One statement: the mail row, the run's count raised, and a NOTIFY so that
-- an idle worker claims the run (a cancel or a signal is work). Nothing is
-- inserted when the run does not exist.
WITH bumped AS (
    UPDATE {schema}.runs SET mail = mail + 1 WHERE id = %(run_id)s RETURNING id
),
posted AS (
    INSERT INTO {schema}.mail (run_id, kind, data, at)
    SELECT id, %(kind)s, %(data)s::jsonb, %(at)s FROM bumped
    RETURNING id, run_id, kind, data, at
),
woken AS (
    SELECT pg_notify('{channel}', '') FROM posted
)
SELECT id, run_id, kind, data, at, (SELECT count(*) FROM woken) FROM posted;

-- name: mail
SELECT id, run_id, kind, data, at FROM {schema}.mail WHERE run_id = %s ORDER BY id;

-- name: reserve
-- Take a free or expired reservation, or refresh one the run holds. When
-- another run holds it, the row is locked but not returned (the WHERE is
-- false); reserve_holder then reads it in the same transaction.
INSERT INTO {schema}.reservations AS s (name, run_id, expires_at)
VALUES (%(name)s, %(run_id)s, %(expires_at)s)
ON CONFLICT (name) DO UPDATE SET run_id = excluded.run_id, expires_at = excluded.expires_at
WHERE s.expires_at <= %(now)s OR s.run_id = excluded.run_id
RETURNING name, run_id, expires_at;

-- name: reserve_holder
-- A statement of its own: its snapshot sees a holder that committed after
-- reserve's snapshot was taken (the row reserve conflicted with and locked).
SELECT name, run_id, expires_at FROM {schema}.reservations WHERE name = %s;

-- name: lock_reservations
-- The holders of a commit's required reservations, locked until the commit
-- ends: no run takes one of them over between the check and the commit.
SELECT name, run_id, expires_at FROM {schema}.reservations
WHERE name = ANY(%s::text[])
ORDER BY name
FOR SHARE;

-- name: release_reservations
WITH freed AS (
    DELETE FROM {schema}.reservations
    WHERE run_id = %(run_id)s AND (%(all)s OR name = ANY(%(names)s::text[]))
    RETURNING 1
)
SELECT count(*) FROM freed;

-- name: reservations
SELECT name, run_id, expires_at FROM {schema}.reservations
WHERE (%(run_id)s::text IS NULL OR run_id = %(run_id)s)
  AND (%(now)s::float8 IS NULL OR expires_at > %(now)s)
ORDER BY name;

-- Rewriting stored JSON in place (Store.rewrite_data), a page at a time in
-- key order, each page in a transaction that locks the rows it read. Runs
-- are locked in id order, as commit_runs locks them, so the two cannot
-- deadlock; a worker's commit to a locked run waits for the page to end.

-- name: rewrite_runs_lock
-- The page's runs, locked first: a state is read only once its run is locked
-- (rewrite_runs_page), since a commit that this lock waited for inserts state
-- changes that a read in the same statement, whose snapshot is older, misses.
SELECT id FROM {schema}.runs WHERE id > %s ORDER BY id LIMIT %s FOR UPDATE;

-- name: rewrite_runs_page
SELECT id, state, {changes_of:runs}
FROM {schema}.runs WHERE id = ANY(%s::text[]) ORDER BY id;

-- name: rewrite_run
-- The state as a whole: the run's changes are folded into it (and deleted).
UPDATE {schema}.runs SET state = %s::jsonb, state_changes = 0 WHERE id = %s;

-- name: clear_state_changes
DELETE FROM {schema}.state_changes WHERE run_id = ANY(%s::text[]);

-- name: rewrite_events_page
SELECT run_id, seq, data FROM {schema}.events
WHERE (run_id, seq) > (%s, %s) ORDER BY run_id, seq LIMIT %s FOR UPDATE;

-- name: rewrite_event
UPDATE {schema}.events SET data = %s::jsonb WHERE run_id = %s AND seq = %s;

-- name: rewrite_mail_page
SELECT id, kind, run_id, data FROM {schema}.mail WHERE id > %s ORDER BY id LIMIT %s FOR UPDATE;

-- name: rewrite_mail
UPDATE {schema}.mail SET data = %s::jsonb WHERE id = %s;

-- Purging settled runs (Store.purge): each batch is one transaction.

-- name: purge_runs
-- A run is last changed no earlier than it was created, so "created_at <
-- cutoff" holds for every run purged and lets runs_status_created bound the
-- scan. A run with a live lease (an operator acting on it) is left, and so
-- is one a commit or claim holds locked right now (SKIP LOCKED: the purge
-- never queues behind a worker; the next purge takes it).
WITH doomed AS (
    SELECT id FROM {schema}.runs
    WHERE status = ANY(%(statuses)s::text[])
      AND created_at < %(before)s AND updated_at < %(before)s
      AND (owner IS NULL OR lease_until IS NULL OR lease_until < %(before)s)
    ORDER BY created_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
DELETE FROM {schema}.runs AS r USING doomed WHERE r.id = doomed.id
RETURNING r.id, r.saga, r.version, r.status, r.state, r.error, r.created_at, r.updated_at,
          r.owner, r.lease_epoch, r.lease_until, r.wake_at, r.last_seq, r.mail,
          {changes_of:r};

-- name: purge_events
DELETE FROM {schema}.events WHERE run_id = ANY(%s::text[])
RETURNING run_id, seq, kind, at, step, attempt, data;

-- name: purge_events_quietly
DELETE FROM {schema}.events WHERE run_id = ANY(%s::text[]);

-- name: purge_state_changes
DELETE FROM {schema}.state_changes WHERE run_id = ANY(%s::text[]);

-- name: purge_mail
DELETE FROM {schema}.mail WHERE run_id = ANY(%s::text[]);

-- name: purge_reservations
DELETE FROM {schema}.reservations WHERE run_id = ANY(%s::text[]);
