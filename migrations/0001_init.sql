-- pilot registry schema, version 1. Applied by `pilotctl registry run --store postgres://...`
-- at start (src/registry/pg/schema.rs), inside one transaction, and recorded in pilot_schema.
-- Keys are 32-byte Ed25519 public keys; times are unix milliseconds.

-- hostname -> key. First claim wins across instances: the primary key decides, in the
-- claiming transaction. A key holds at most one hostname (UNIQUE key).
CREATE TABLE pilot_names (
    name text PRIMARY KEY,
    key bytea NOT NULL UNIQUE CHECK (length(key) = 32)
);

-- Trust requests and responses held until their target acknowledges them, one per
-- (target, sender, kind): 1 = request, 2 = response.
CREATE TABLE pilot_held (
    target bytea NOT NULL CHECK (length(target) = 32),
    sender bytea NOT NULL CHECK (length(sender) = 32),
    kind smallint NOT NULL,
    received_ms bigint NOT NULL,
    original bytea NOT NULL,
    PRIMARY KEY (target, sender, kind)
);

-- Registered nodes and when each was last heard (written at most hourly per node).
CREATE TABLE pilot_nodes (
    key bytea PRIMARY KEY CHECK (length(key) = 32),
    last_seen_ms bigint NOT NULL
);

-- Presence: which instance a node is attached to and its reflexive endpoint there (written
-- when it moves and every third of the online window).
CREATE TABLE pilot_presence (
    key bytea PRIMARY KEY CHECK (length(key) = 32),
    instance text NOT NULL,
    addr text NOT NULL,
    last_seen_ms bigint NOT NULL
);

-- One row per registry instance: its status, rewritten every few seconds.
CREATE TABLE pilot_instances (
    instance text PRIMARY KEY,
    beat_ms bigint NOT NULL,
    status jsonb NOT NULL
);
