-- Reports of content (module "Reporting content"): an event, a room or a user reported by a local
-- user to this server's admins. id comes from the stream counter "reports".
CREATE TABLE reports (
    id          BIGINT PRIMARY KEY,
    kind        TEXT NOT NULL,             -- 'event', 'room' or 'user'
    reporter    TEXT NOT NULL,             -- user ID of the local user who reported
    room_id     TEXT NOT NULL DEFAULT '',  -- event and room reports
    event_id    TEXT NOT NULL DEFAULT '',  -- event reports
    user_id     TEXT NOT NULL DEFAULT '',  -- user reports; the event's sender for event reports
    reason      TEXT NOT NULL DEFAULT '',
    received_ts BIGINT NOT NULL
);
CREATE INDEX reports_kind ON reports (kind, id);
