-- Accounts, devices and everything a user owns that is not a room.
-- Times are milliseconds since the Unix epoch; 0 means "never" for expiry columns.

CREATE TABLE accounts (
    localpart     TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL DEFAULT '',
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest      BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated   BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts    BIGINT NOT NULL
);

CREATE TABLE devices (
    localpart    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    display_name TEXT,
    created_ts   BIGINT NOT NULL,
    last_seen_ts BIGINT NOT NULL DEFAULT 0,
    last_seen_ip TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (localpart, device_id)
);

-- Tokens are stored as the hex SHA-256 of the token, never the token itself.
CREATE TABLE access_tokens (
    token_hash   TEXT PRIMARY KEY,
    localpart    TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    refresh_hash TEXT NOT NULL DEFAULT '',
    expires_ts   BIGINT NOT NULL DEFAULT 0,
    used         BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts   BIGINT NOT NULL
);
CREATE INDEX access_tokens_device ON access_tokens (localpart, device_id);

-- prev_hash is the refresh token this one replaced; it stays valid until this pair is first used.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    prev_hash  TEXT NOT NULL DEFAULT '',
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (localpart, device_id);

-- Profile fields (displayname, avatar_url and custom keys), value as JSON.
CREATE TABLE profiles (
    localpart TEXT NOT NULL,
    field     TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (localpart, field)
);

-- Account data; room_id is '' for global account data. stream_pos orders changes for /sync.
CREATE TABLE account_data (
    localpart  TEXT NOT NULL,
    room_id    TEXT NOT NULL,
    data_type  TEXT NOT NULL,
    content    TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (localpart, room_id, data_type)
);
CREATE INDEX account_data_stream ON account_data (localpart, stream_pos);

CREATE TABLE filters (
    localpart TEXT NOT NULL,
    filter_id BIGINT NOT NULL,
    filter    TEXT NOT NULL,
    PRIMARY KEY (localpart, filter_id)
);

-- Admin-issued tokens for m.login.registration_token. uses_allowed NULL = unlimited,
-- expiry_ts NULL = never expires.
CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending      BIGINT NOT NULL DEFAULT 0,
    completed    BIGINT NOT NULL DEFAULT 0,
    expiry_ts    BIGINT,
    created_ts   BIGINT NOT NULL
);

-- User-interactive authentication sessions, shared by every node.
CREATE TABLE uia_sessions (
    session_id         TEXT PRIMARY KEY,
    action             TEXT NOT NULL,
    localpart          TEXT NOT NULL DEFAULT '',
    completed          TEXT NOT NULL DEFAULT '[]',
    registration_token TEXT NOT NULL DEFAULT '',
    created_ts         BIGINT NOT NULL,
    expires_ts         BIGINT NOT NULL
);

CREATE TABLE openid_tokens (
    token_hash TEXT PRIMARY KEY,
    localpart  TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- Nonces of the shared-secret registration API (/_synapse/admin/v1/register).
CREATE TABLE registration_nonces (
    nonce      TEXT PRIMARY KEY,
    expires_ts BIGINT NOT NULL
);

-- Monotonic counters for stream positions and per-user ids. Bumping a row locks it until commit, so
-- positions of one stream become visible in order.
CREATE TABLE stream_counters (
    name TEXT PRIMARY KEY,
    pos  BIGINT NOT NULL
);
