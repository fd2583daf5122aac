-- Outbox claims and retention.
--
-- A relay leases the pending rows it is about to publish (claimed_by, claimed_until)
-- so that two relays sharing the outbox do not publish a row twice; a lease that lapses
-- (its relay died) makes the rows claimable again.
ALTER TABLE outbox ADD COLUMN claimed_by text, ADD COLUMN claimed_until timestamptz;

-- Retention deletes published rows by age, and inactive sessions and edges by expiry;
-- republication after a stream loss reads the revoked ones that can still matter.
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX sessions_expiry ON sessions (zone_id, expires_at);
CREATE INDEX sessions_revoked ON sessions (zone_id, id) WHERE status = 'revoked';
CREATE INDEX delegation_edges_inactive ON delegation_edges (zone_id, expires_at) WHERE status <> 'active';
