-- A sent event's (device, transaction ID) is in its events row (txn_device, txn_id), committed
-- with it; the room writer keeps the IDs of the last 24 hours in memory and reads them back from
-- there at start (homeserver/room/txnindex.go). The table keyed by (user, device, transaction ID)
-- cost every send an insert into one B-tree page per sender, the largest share of the pages a
-- group commit wrote (docs/performance.md).
DROP TABLE transaction_ids;
