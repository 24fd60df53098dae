package sync

// SetSharing turns the shared room sections (share.go) on or off, so tests can compare a response
// built from them with the per-user one.
func SetSharing(s *Service, on bool) { s.noShare.Store(!on) }

// SharedUses is how many times a shared room section went into a response.
func SharedUses(s *Service) int64 { return s.sharedUses.Load() }

// TimelineReads is how many times a sync read rooms' events between two positions.
func TimelineReads(s *Service) int64 { return s.timelineReads.Load() }
