-- No query reads events by stream position alone any more: timeline reads go by room
-- (events_room_stream), membership changes by events_member_stream. The unique index on
-- stream_pos cost every stored event one more index insert; positions are unique because one
-- writer hands them out under LockPosition.
DROP INDEX events_stream;
