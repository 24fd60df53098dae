-- Receipts and presence (module "Receipts", "Presence"). Typing lives in memory only.

-- The latest receipt of each (room, user, type, thread): thread_id '' is an unthreaded receipt.
-- stream_pos is the receipts stream position of the last change; event_pos is the events stream
-- position of the acknowledged event (unread counts compare against it).
CREATE TABLE receipts (
    room_id      TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    thread_id    TEXT NOT NULL DEFAULT '',
    event_id     TEXT NOT NULL,
    event_pos    BIGINT NOT NULL,
    ts           BIGINT NOT NULL,
    stream_pos   BIGINT NOT NULL,
    PRIMARY KEY (room_id, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);

-- The last explicit presence of each user, so a restart does not forget status messages. Heartbeats
-- are not written; every node keeps the live state in memory, shared over the bus.
CREATE TABLE presence (
    user_id        TEXT PRIMARY KEY,
    presence       TEXT NOT NULL,
    status_msg     TEXT NOT NULL DEFAULT '',
    last_active_ts BIGINT NOT NULL
);
