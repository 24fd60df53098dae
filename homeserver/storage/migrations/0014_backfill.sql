-- Backfill: where the history a server holds of a room stops. A row names an event that stored
-- timeline events cite as a prev_event but that is not in the timeline here (missing, or held only
-- as an outlier): the place to ask other servers' /backfill from. depth is the depth of the
-- deepest stored event citing it (the missing event lies below). next_try_ts keeps it from being
-- asked for again before then (no server had anything more, or none answered).
CREATE TABLE backfill_extremities (
    room_id     TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    depth       BIGINT NOT NULL,
    next_try_ts BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, event_id)
);
