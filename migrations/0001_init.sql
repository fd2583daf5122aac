-- Caracal initial schema.
--
-- Isolation between zones is enforced by the database, not only by queries: every
-- zone-owned table is keyed by (zone_id, id) and every foreign key carries zone_id on
-- both sides, so a row can only ever reference a row of its own zone.

CREATE TABLE zones (
    id         text        PRIMARY KEY,
    name       text        NOT NULL,
    -- Delegation graph epoch. Writers lock this row (SELECT ... FOR UPDATE) so changes
    -- in one zone are serialised and the epoch strictly increases.
    epoch      bigint      NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL
);

CREATE TABLE applications (
    zone_id     text        NOT NULL REFERENCES zones (id),
    id          text        NOT NULL, -- client_id
    name        text        NOT NULL,
    secret_hash text        NOT NULL,
    disabled    boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (zone_id, id)
);

CREATE TABLE resources (
    zone_id    text        NOT NULL REFERENCES zones (id),
    id         text        NOT NULL,
    identifier text        NOT NULL,
    scopes     text[]      NOT NULL,
    archived   boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (zone_id, id),
    UNIQUE (zone_id, identifier)
);

CREATE TABLE signing_keys (
    zone_id    text        NOT NULL REFERENCES zones (id),
    id         text        NOT NULL, -- kid
    sealed     bytea       NOT NULL,
    public_jwk bytea       NOT NULL,
    status     text        NOT NULL CHECK (status IN ('active', 'retired')),
    created_at timestamptz NOT NULL,
    retired_at timestamptz,
    not_after  timestamptz,
    PRIMARY KEY (zone_id, id)
);

-- A zone signs with exactly one key at a time.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (zone_id) WHERE status = 'active';

CREATE TABLE policy_bundles (
    zone_id    text        NOT NULL REFERENCES zones (id),
    id         bigint      NOT NULL, -- version
    modules    jsonb       NOT NULL,
    -- json, not jsonb: the data document is returned byte for byte as it was stored.
    data       json,
    active     boolean     NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (zone_id, id)
);

CREATE UNIQUE INDEX policy_bundles_one_active ON policy_bundles (zone_id) WHERE active;

-- The high-volume tables are hash-partitioned by zone: every zone-qualified query is
-- pruned to one partition, and a zone's rows live together.

CREATE TABLE sessions (
    zone_id       text        NOT NULL REFERENCES zones (id),
    id            text        NOT NULL, -- sid
    client_id     text        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    revoked_at    timestamptz,
    revoke_reason text        NOT NULL DEFAULT '',
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, client_id) REFERENCES applications (zone_id, id)
) PARTITION BY HASH (zone_id);

CREATE TABLE delegation_edges (
    zone_id           text        NOT NULL REFERENCES zones (id),
    id                text        NOT NULL,
    source_session_id text        NOT NULL,
    target_session_id text        NOT NULL,
    resource          text        NOT NULL, -- resource identifier
    scopes            text[]      NOT NULL,
    expires_at        timestamptz NOT NULL,
    max_hops          integer     NOT NULL,
    parent_edge_id    text,
    status            text        NOT NULL CHECK (status IN ('active', 'revoked', 'expired')),
    created_at        timestamptz NOT NULL,
    revoked_at        timestamptz,
    epoch             bigint      NOT NULL,
    PRIMARY KEY (zone_id, id),
    FOREIGN KEY (zone_id, source_session_id) REFERENCES sessions (zone_id, id),
    FOREIGN KEY (zone_id, target_session_id) REFERENCES sessions (zone_id, id),
    FOREIGN KEY (zone_id, resource) REFERENCES resources (zone_id, identifier),
    FOREIGN KEY (zone_id, parent_edge_id) REFERENCES delegation_edges (zone_id, id)
) PARTITION BY HASH (zone_id);

-- Revocation cascades walk the graph by parent, source and target; expiry scans by time.
CREATE INDEX delegation_edges_parent ON delegation_edges (zone_id, parent_edge_id);
CREATE INDEX delegation_edges_source ON delegation_edges (zone_id, source_session_id);
CREATE INDEX delegation_edges_target ON delegation_edges (zone_id, target_session_id);
CREATE INDEX delegation_edges_expiry ON delegation_edges (zone_id, expires_at) WHERE status = 'active';

CREATE TABLE outbox (
    zone_id      text        NOT NULL REFERENCES zones (id),
    -- One sequence across partitions, so ids order rows of all zones by creation.
    id           bigserial   NOT NULL,
    stream       text        NOT NULL,
    fields       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL,
    published_at timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (zone_id, id)
) PARTITION BY HASH (zone_id);

CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Audit events have no foreign key to zones: global actions are recorded with an empty
-- zone id, and refused attempts against unknown zones are worth recording too.
CREATE TABLE audit_events (
    zone_id text        NOT NULL,
    id      bigserial   NOT NULL,
    at      timestamptz NOT NULL,
    actor   text        NOT NULL,
    action  text        NOT NULL,
    subject text        NOT NULL,
    detail  json,
    PRIMARY KEY (zone_id, id)
) PARTITION BY HASH (zone_id);

DO $$
DECLARE
    parent text;
    i      integer;
BEGIN
    FOREACH parent IN ARRAY ARRAY['sessions', 'delegation_edges', 'outbox', 'audit_events'] LOOP
        FOR i IN 0..7 LOOP
            EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS 8, REMAINDER %s)',
                           parent || '_p' || i, parent, i);
        END LOOP;
    END LOOP;
END
$$;

CREATE TABLE admin_tokens (
    id         text        PRIMARY KEY,
    zone_id    text        REFERENCES zones (id), -- NULL for a global token
    capability text        NOT NULL,
    hash       bytea       NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
