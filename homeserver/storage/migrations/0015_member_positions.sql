-- The sync notifier reads the membership events between two stream positions after every write
-- batch. Through events_stream that read visited every event of the range (a busy room's
-- messages) to find the few member events; this index holds only those.
CREATE INDEX events_member_stream ON events (stream_pos) WHERE type = 'm.room.member';
