package homeserver

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// roomWriterMetrics export the room writer's counters: jobs per batch is the group commit's
// batch size, and busy time against wall time how much of it the writer works.
func roomWriterMetrics(rooms *room.Service) []prometheus.Collector {
	counter := func(name, help string, value func(room.WriterStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return value(rooms.WriterStats()) })
	}
	return []prometheus.Collector{
		counter("homeserver_room_writer_batches_total", "Transactions run by the room writer (group commits).",
			func(st room.WriterStats) float64 { return float64(st.Batches) }),
		counter("homeserver_room_writer_jobs_total", "Jobs (sends, state changes, received events) run by the room writer.",
			func(st room.WriterStats) float64 { return float64(st.Jobs) }),
		counter("homeserver_room_writer_busy_seconds_total", "Time the room writer spent running batches.",
			func(st room.WriterStats) float64 { return st.Busy.Seconds() }),
		counter("homeserver_room_writer_commit_seconds_total", "Time the room writer's committer spent storing pipelined batches (overlaps with the writer's busy time).",
			func(st room.WriterStats) float64 { return st.Committing.Seconds() }),
	}
}
