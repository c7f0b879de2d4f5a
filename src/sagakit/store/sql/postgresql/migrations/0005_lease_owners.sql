-- A process that starts looks for the runs an earlier incarnation of itself
-- held when it died (Store.owners, Store.claim_held), to take them back at
-- once instead of when their leases lapse. Only runs in a worker's hand have
-- an owner (a commit that settles or parks a run releases it), so this index
-- holds the runs in flight, not the millions settled. A commit that keeps
-- its lease leaves owner as it is, so such updates stay HOT.
CREATE INDEX IF NOT EXISTS runs_owner ON {schema}.runs (owner) WHERE owner IS NOT NULL;
