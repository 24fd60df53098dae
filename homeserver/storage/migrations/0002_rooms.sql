-- Rooms and the event DAG.

CREATE TABLE rooms (
    room_id     TEXT PRIMARY KEY,
    version     TEXT NOT NULL,
    creator     TEXT NOT NULL,
    visibility  TEXT NOT NULL DEFAULT 'private', -- public room directory: 'public' or 'private'
    created_ts  BIGINT NOT NULL
);

-- Every event we hold. stream_pos orders events for /sync and is NULL for outliers (events we hold
-- for auth but not in the room timeline). pdu is the federation form, client_json the client form
-- without "unsigned": both are served as stored bytes.
CREATE TABLE events (
    event_id         TEXT PRIMARY KEY,
    room_id          TEXT NOT NULL,
    type             TEXT NOT NULL,
    state_key        TEXT,
    sender           TEXT NOT NULL,
    depth            BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    stream_pos       BIGINT,
    state_group      BIGINT NOT NULL DEFAULT 0, -- state AFTER this event
    membership       TEXT,                      -- content.membership of m.room.member events
    outlier          BOOLEAN NOT NULL DEFAULT FALSE,
    rejected         BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed      BOOLEAN NOT NULL DEFAULT FALSE,
    redacted_by      TEXT NOT NULL DEFAULT '',
    relates_to       TEXT NOT NULL DEFAULT '',  -- m.relates_to.event_id
    rel_type         TEXT NOT NULL DEFAULT '',
    rel_key          TEXT NOT NULL DEFAULT '',  -- annotation key (reactions)
    txn_id           TEXT NOT NULL DEFAULT '',  -- sender's transaction ID, shown only to the sending device
    txn_device       TEXT NOT NULL DEFAULT '',
    pdu              TEXT NOT NULL,
    client_json      TEXT NOT NULL
);
CREATE UNIQUE INDEX events_stream ON events (stream_pos);
CREATE INDEX events_room_stream ON events (room_id, stream_pos);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_pos);
CREATE INDEX events_relates ON events (relates_to, rel_type);
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

CREATE TABLE event_edges (
    event_id      TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth (
    event_id      TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);

-- The room's forward extremities: events with no known successor.
CREATE TABLE forward_extremities (
    room_id  TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- State is stored as groups: a group is a delta over prev_group (or a full snapshot when
-- prev_group is 0), so each state event adds one row, never a copy of the whole state. Chains are
-- cut with a snapshot when they grow long (chain_len).
CREATE TABLE state_groups (
    group_id   BIGINT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    prev_group BIGINT NOT NULL,
    chain_len  BIGINT NOT NULL
);
CREATE TABLE state_group_entries (
    group_id  BIGINT NOT NULL,
    type      TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id  TEXT NOT NULL, -- '' removes the key inherited from prev_group
    PRIMARY KEY (group_id, type, state_key)
);

-- The room's current (resolved) state, for fast reads.
CREATE TABLE current_state (
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    membership TEXT,
    stream_pos BIGINT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);
CREATE INDEX current_state_members ON current_state (type, state_key, membership);

-- Idempotency of PUT /send and friends: (user, device, txn_id) -> event, committed with the event.
CREATE TABLE transaction_ids (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias      TEXT PRIMARY KEY,
    room_id    TEXT NOT NULL,
    creator    TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);
