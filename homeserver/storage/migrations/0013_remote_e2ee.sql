-- End-to-end encryption over federation (federation/e2ee.go, federation/todevice.go).

-- m.direct_to_device EDUs received, by origin server and message_id: an EDU sent again (in a
-- retried or a later transaction) is delivered once. Rows older than a day are purged.
CREATE TABLE federation_to_device_received (
    origin      TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);
CREATE INDEX federation_to_device_received_ts ON federation_to_device_received (received_ts);

-- What this server last announced to other servers about a local user's device list
-- (m.device_list_update, m.signing_key_update): the user's last stream_id and a digest of the
-- master and self-signing keys, and per device a digest of its display name and keys. A change
-- on the device_lists stream is announced by comparing the current list with these rows.
CREATE TABLE device_list_announced_users (
    user_id        TEXT PRIMARY KEY,
    stream_id      BIGINT NOT NULL,
    signing_digest TEXT NOT NULL
);
CREATE TABLE device_list_announced_devices (
    user_id   TEXT NOT NULL,
    device_id TEXT NOT NULL,
    digest    TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- The announcer's cursor on the device_lists stream (stream_counters row federation_device_lists)
-- starts at the stream's current position: changes from before this migration are not announced.
INSERT INTO stream_counters (name, pos) SELECT 'federation_device_lists', pos FROM stream_counters WHERE name = 'device_lists';
