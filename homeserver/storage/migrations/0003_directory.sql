-- Rooms a user forgot (POST /rooms/{roomId}/forget). A row counts only while the user's current
-- membership event in the room is still the one they forgot the room at (membership_event): joining
-- or being invited again brings the room back without touching this table.
CREATE TABLE forgotten_rooms (
    user_id          TEXT NOT NULL,
    room_id          TEXT NOT NULL,
    membership_event TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
