-- To-device messages (module "Send-to-Device messaging"), server-side key backups (module "End-to-End
-- Encryption", "Server-side key backups") and dehydrated devices (MSC3814). Like devices, the
-- per-device tables are keyed by (localpart, device_id): local devices only, deleted with the device.

-- Messages waiting for a local device. stream_pos is the position of the "to_device" stream that the
-- sendToDevice request took: one position per request, and a request gives a device at most one
-- message, so (localpart, device_id, stream_pos) is unique and orders a device's messages. A row is
-- deleted once the device acknowledged it (synced with a later token) or when the device goes.
CREATE TABLE to_device_inbox (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    sender     TEXT NOT NULL,
    event_type TEXT NOT NULL,
    content    TEXT NOT NULL,
    PRIMARY KEY (localpart, device_id, stream_pos)
);

-- Idempotency of PUT /sendToDevice/{eventType}/{txnId}: the sending device's (type, txn_id),
-- committed with the messages, so a retried request delivers nothing twice.
CREATE TABLE to_device_txns (
    localpart  TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    event_type TEXT NOT NULL,
    txn_id     TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (localpart, device_id, event_type, txn_id)
);

-- Key backup versions of each user, numbered 1, 2, ... per user. A deleted version keeps its row
-- (deleted = TRUE, no keys) so its number is never handed out again. etag changes whenever the
-- version's keys change; key_count is the number of its keys, kept in the transaction that changes
-- them.
CREATE TABLE key_backup_versions (
    localpart TEXT NOT NULL,
    version   BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag      BIGINT NOT NULL DEFAULT 0,
    key_count BIGINT NOT NULL DEFAULT 0,
    deleted   BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (localpart, version)
);

-- The backed-up session keys of a version (session_data is the client's ciphertext, as JSON).
CREATE TABLE key_backup_keys (
    localpart           TEXT NOT NULL,
    version             BIGINT NOT NULL,
    room_id             TEXT NOT NULL,
    session_id          TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count     BIGINT NOT NULL,
    is_verified         BOOLEAN NOT NULL,
    session_data        TEXT NOT NULL,
    PRIMARY KEY (localpart, version, room_id, session_id)
);

-- The dehydrated device of each user (at most one): device_id is also a row of devices (without
-- access tokens), device_data the client's encrypted pickle, as JSON.
CREATE TABLE dehydrated_devices (
    localpart   TEXT PRIMARY KEY,
    device_id   TEXT NOT NULL,
    device_data TEXT NOT NULL,
    created_ts  BIGINT NOT NULL
);
