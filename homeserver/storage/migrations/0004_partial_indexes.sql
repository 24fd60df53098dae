-- Most events relate to nothing: index only those that do, so a plain message costs one index
-- insert less.
DROP INDEX events_relates;
CREATE INDEX events_relates ON events (relates_to, rel_type) WHERE relates_to <> '';
