-- The shared index (docs/storage.md). Counters live in `usage` and
-- `user_usage`, changed in the same transactions as the rows they count, so
-- that quotas are checked without summing the table; every transaction that
-- changes them locks the one `usage` row first, which also orders them.

CREATE TABLE files (
    key bytea PRIMARY KEY,          -- SHA-256 of the signed path
    meta jsonb NOT NULL,            -- everything stored about the file
    size bigint NOT NULL,
    uploader text,
    jwt_slot text UNIQUE,           -- a JWT slot holds one file
    created bigint NOT NULL,        -- Unix seconds
    expires bigint NOT NULL
);
CREATE INDEX files_expires ON files (expires);
CREATE INDEX files_created ON files (created);
CREATE INDEX files_uploader ON files (uploader);

-- Uploads in progress: one per path and per JWT slot, with their reservation.
CREATE TABLE claims (
    id bigserial PRIMARY KEY,
    key bytea NOT NULL UNIQUE,
    jwt_slot text UNIQUE,
    size bigint NOT NULL,
    uploader text,
    path text NOT NULL,
    object text NOT NULL,           -- where the store would keep the bytes
    instance text NOT NULL,
    heartbeat bigint NOT NULL       -- Unix seconds; stale claims are swept
);
CREATE INDEX claims_heartbeat ON claims (heartbeat);

CREATE TABLE usage (
    id int PRIMARY KEY CHECK (id = 1),
    files bigint NOT NULL,
    bytes bigint NOT NULL,
    reserved bigint NOT NULL
);
INSERT INTO usage VALUES (1, 0, 0, 0);

CREATE TABLE user_usage (
    uploader text PRIMARY KEY,
    bytes bigint NOT NULL,
    reserved bigint NOT NULL
);
