-- Outbound federation: the PDUs waiting to be sent to each destination server. A row is written in
-- the transaction that stores the event (so no event can be committed without its rows, nor rows
-- without their event), and deleted once the destination accepted the transaction carrying it.
-- stream_pos is the event's position in the events stream: destinations get events in that order.
CREATE TABLE federation_outbox (
    destination TEXT NOT NULL,
    stream_pos  BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    PRIMARY KEY (destination, stream_pos)
);

-- Inbound federation: transactions (PUT /send/{txnId}) already processed, with the response they
-- got, so that a retry of the same (origin, txn_id) gets the same answer without being processed
-- again. Rows older than a day are purged.
CREATE TABLE federation_inbound_txns (
    origin      TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    response    TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX federation_inbound_txns_ts ON federation_inbound_txns (received_ts);
