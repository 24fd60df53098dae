-- Outbound federation: the EDUs waiting to be sent to each destination server that must survive a
-- restart (to-device messages, device list and signing key updates, receipts). Typing and presence
-- are kept in memory only. A row is deleted once the destination accepted the transaction carrying
-- it. id orders a destination's EDUs; its value is unique across destinations.
CREATE TABLE federation_edu_outbox (
    destination TEXT NOT NULL,
    id          BIGINT NOT NULL,
    edu_type    TEXT NOT NULL,
    content     TEXT NOT NULL,
    queued_ts   BIGINT NOT NULL,
    PRIMARY KEY (destination, id)
);

-- Which node sends a destination's queued rows: with several nodes on one database, each would
-- otherwise send the same rows. A node holds a destination's lease until expires_ts and renews it
-- while it sends; another node takes it over once it expired (its holder died).
CREATE TABLE federation_leases (
    destination TEXT PRIMARY KEY,
    node        TEXT NOT NULL,
    expires_ts  BIGINT NOT NULL
);
