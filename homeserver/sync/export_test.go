package sync

// SetSharing turns the shared room sections (share.go) on or off, so tests can compare a response
// built from them with the per-user one.
func SetSharing(s *Service, on bool) { s.noShare.Store(!on) }

// SharedUses is how many times a shared room section went into a response.
func SharedUses(s *Service) int64 { return s.sharedUses.Load() }

// TimelineReads is how many times a sync read rooms' events between two positions.
func TimelineReads(s *Service) int64 { return s.timelineReads.Load() }

// SetAlone says whether the service may take itself for the only node writing to its database
// (true with an embedded bus), so tests can act as a second node on the same bus.
func SetAlone(s *Service, alone bool) { s.notifier.alone.Store(alone) }

// PositionReads is how many times the stream positions were read from the database.
func PositionReads(s *Service) int64 { return s.positions.reads.Load() }

// TimelineStoreReads is how many times a sync read rooms' events from storage (not from the
// recent events of the room writer).
func TimelineStoreReads(s *Service) int64 { return s.timelineStoreReads.Load() }

// Builds is how many responses were built.
func Builds(s *Service) int64 { return s.builds.Load() }
