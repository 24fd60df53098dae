-- Cheaper DAG storage on the write path. An event's prev_events and auth_events are in its PDU, so
-- only the reverse direction needs a table: which events name an event as a prev_event (to find
-- forward extremities when events arrive out of order). One index, keyed by the prev event, instead
-- of two per row; the auth edges (never read) are dropped.
DROP TABLE event_auth;
CREATE TABLE event_edges_new (
    prev_event_id TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    PRIMARY KEY (prev_event_id, event_id)
);
INSERT INTO event_edges_new (prev_event_id, event_id) SELECT prev_event_id, event_id FROM event_edges;
DROP TABLE event_edges;
ALTER TABLE event_edges_new RENAME TO event_edges;
