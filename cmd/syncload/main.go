// Command syncload measures the sync stream under load, over the four ways to read it: how long a
// message takes to reach many receivers (long polling GET /sync, Server-Sent Events or the
// WebSocket) and whether every receiver gets every message exactly once; how long an initial
// /sync takes for a user in many rooms; and how much server memory an idle sync connection costs.
//
//	go run ./cmd/syncload -scenario fanout -transport ws -receivers 1000 -messages 200 -rate 20
//	go run ./cmd/syncload -scenario initial -users 20 -rooms 50 -room-messages 50
//	go run ./cmd/syncload -scenario idle -transport longpoll -receivers 1000
//
// `go run ./cmd/syncload -h` describes the scenarios, what they print and every flag (usage
// below). The tool needs a server with open registration and HS_RATE_LIMITS_ENABLED=false; the
// idle scenario also needs its Prometheus metrics (on by default, at /metrics).
//
// Bounded: only loopback URLs are accepted, every scenario does a fixed amount of work
// (-receivers, -messages, -users × -rooms × -room-messages, with upper limits), waits for a
// bounded time (-drain, -settle, -steady-timeout) and -max-duration caps the whole run. The users and rooms stay on
// the server (names start with syncload_<run>).
//
// The tool and the server share the machine's CPUs, so the figures include the tool's own cost
// of reading and decoding receivers × messages responses (it prints its own CPU time, the
// server's from the metrics, and that of other processes from /proc/stat).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"
)

type config struct {
	scenario  string
	transport string
	base      string
	metrics   string

	// fanout and idle
	receivers     int
	messages      int
	rate          float64
	timelineLimit int
	lazyMembers   bool
	setPresence   string
	pollTimeout   time.Duration
	drain         time.Duration

	// initial
	users         int
	rooms         int
	roomMessages  int
	initialFilter string
	initialConc   int

	// idle
	settle         time.Duration
	samples        int
	sampleInterval time.Duration
	forceGC        string
	steadyTimeout  time.Duration

	maxDuration  time.Duration
	setupWorkers int
	connWorkers  int
	cpuProfile   string

	pid           int    // the server's process ID: its CPU time from /proc instead of the metrics
	serverProfile string // fanout: the server's CPU profile while sending, from its pprof endpoint
}

const usageText = `syncload: load scenarios for the sync stream of a homeserver (loopback only).

Usage: syncload [flags]

Needs a server with open registration and HS_RATE_LIMITS_ENABLED=false. Every run registers its
own users (syncload_<run>_...) and rooms, which stay on the server.

Scenarios (-scenario):

  fanout (default)
      One sender and -receivers users in one public room. Every receiver gets a filter (timeline
      limit -timeline-limit) and an initial sync, then reads the stream over -transport from its
      own next_batch, each with its own connection. The sender PUTs -messages messages at -rate
      per second, one after the other; each body carries its sequence number and send time.
      Prints the send rate and latency, delivery latency (send -> response/event/message read by
      the receiver) and per-message fan-out time (until the last receiver has it) as
      p50/p95/p99/max, the five slowest messages (is the tail a few moments or the whole run?),
      delivered/expected, missed, duplicated, out of order, limited timelines,
      transport errors and reconnections, and the CPU time of the server (from /proc with -pid,
      else from -metrics if reachable), of the tool and of other processes (from /proc/stat)
      while sending and draining, also per sync response: the tool shares the machine with the
      server. Exit status 1 if any message was
      missed or duplicated, or if the stream broke its protocol (an SSE id or WebSocket
      next_batch that is not the body's).

  initial
      -users users, each joined to -rooms rooms that hold -room-messages messages each (sent by
      the members in turn), all set up by the tool. Then every user does GET /sync without since
      (timeout=0, filter -initial-filter, none by default), -initial-concurrency at a time.
      Prints the time to the whole response (p50/p95/p99/max over the users, and the first one,
      on cold caches), its size and the rooms and timeline events in it; every user must see
      all its rooms.

  idle
      -receivers users in one room, set up as for fanout. After -settle, it reads the server's
      metrics (-metrics: process_resident_memory_bytes, go_memstats_heap_inuse_bytes,
      go_memstats_stack_inuse_bytes, go_goroutines, process_open_fds) every -sample-interval
      until -samples consecutive readings agree on RSS (within 1 MiB or 1 %; at most
      -steady-timeout) and keeps the median of each (GC noise). With -force-gc (auto: if the
      server serves it), each reading follows a garbage collection asked of the server's pprof
      endpoint (HS_METRICS_PPROF=true), so the heap figure is the live heap. Then it opens
      -receivers idle connections of -transport (a long poll of -poll-timeout, sent again when it
      returns; an SSE stream; a WebSocket), waits -settle (measuring the server's CPU over its
      second half) and samples again the same way. Prints before, after and the difference per
      connection; no messages are sent.

Transports (-transport), for fanout and idle:
  longpoll   GET /_matrix/client/v3/sync?since=...&timeout=<-poll-timeout>, in a loop
  sse        GET /_matrix/client/unstable/dev.hearth/sync/sse?since=... (reconnects with Last-Event-ID)
  ws         GET /_matrix/client/unstable/dev.hearth/sync/ws?since=... (Authorization header;
             reconnects with since = the last next_batch, e.g. after close 4002 "too slow")
Each receiver keeps its own position (the last next_batch it read) and counts every message it
gets, so loss and duplicates are accounted for the same way on all three.

Bounds: only loopback URLs (-base and -metrics); a fixed amount of work, with upper limits on
the sizes; -drain, -settle and -steady-timeout bound the waiting; -max-duration caps the whole
run, setup included. The tool stops by itself and closes every connection it opened.

Examples:
  syncload -scenario fanout -transport ws -receivers 1000 -messages 200 -rate 20
  syncload -scenario initial -users 20 -rooms 50 -room-messages 50
  syncload -scenario idle -transport longpoll -receivers 1000

Flags:
`

func main() {
	var c config
	flag.StringVar(&c.scenario, "scenario", "fanout", "fanout, initial or idle (see above)")
	flag.StringVar(&c.transport, "transport", "longpoll", "how receivers read the stream: longpoll, sse or ws (fanout, idle)")
	flag.StringVar(&c.base, "base", "http://127.0.0.1:8008", "homeserver base URL (loopback only)")
	flag.StringVar(&c.metrics, "metrics", "", "the server's Prometheus metrics URL (loopback only; default <base>/metrics)")
	flag.IntVar(&c.receivers, "receivers", 1000, "fanout, idle: receiving users, each with its own connection")
	flag.IntVar(&c.messages, "messages", 200, "fanout: messages the sender posts")
	flag.Float64Var(&c.rate, "rate", 20, "fanout: messages per second")
	flag.IntVar(&c.timelineLimit, "timeline-limit", 50, "fanout, idle: timeline limit of the receivers' sync filter")
	flag.BoolVar(&c.lazyMembers, "lazy-load-members", false, "fanout, idle: set lazy_load_members in the receivers' sync filter (as Element does)")
	flag.StringVar(&c.setPresence, "set-presence", "", "fanout, idle: set_presence of the receivers' syncs (empty: not sent, the server takes online)")
	flag.DurationVar(&c.pollTimeout, "poll-timeout", 30*time.Second, "longpoll: long-poll timeout asked of the server")
	flag.DurationVar(&c.drain, "drain", 30*time.Second, "fanout: how long to wait for deliveries after the last send")
	flag.IntVar(&c.users, "users", 20, "initial: users whose initial sync is timed")
	flag.IntVar(&c.rooms, "rooms", 50, "initial: rooms every user is in")
	flag.IntVar(&c.roomMessages, "room-messages", 50, "initial: messages in every room")
	flag.StringVar(&c.initialFilter, "initial-filter", "", "initial: filter of the timed /sync (inline JSON; empty: none)")
	flag.IntVar(&c.initialConc, "initial-concurrency", 1, "initial: timed initial syncs running at once")
	flag.DurationVar(&c.settle, "settle", 10*time.Second, "idle: wait after setup and after connecting, before sampling")
	flag.IntVar(&c.samples, "samples", 5, "idle: metrics samples before and after connecting (the median is kept)")
	flag.DurationVar(&c.sampleInterval, "sample-interval", time.Second, "idle: time between metrics samples")
	flag.DurationVar(&c.steadyTimeout, "steady-timeout", 2*time.Minute, "idle: longest wait for -samples consecutive samples whose RSS agrees within 1 MiB or 1 %")
	flag.StringVar(&c.forceGC, "force-gc", "auto", "idle: before each sample, have the server collect garbage through GET /debug/pprof/heap?gc=1 next to -metrics (needs metrics.pprof): on, off, or auto (on if the server serves it)")
	flag.DurationVar(&c.maxDuration, "max-duration", 15*time.Minute, "hard limit for the whole run, setup included")
	flag.IntVar(&c.setupWorkers, "setup-concurrency", 16, "concurrent requests while setting up (register, join, send, initial syncs)")
	flag.IntVar(&c.connWorkers, "connect-concurrency", 64, "sse, ws: connections being opened at once")
	flag.StringVar(&c.cpuProfile, "cpuprofile", "", "write the tool's own CPU profile to this file (to see what the load generator costs)")
	flag.IntVar(&c.pid, "pid", 0, "fanout, idle: the server's process ID on this machine: read its CPU time from /proc/<pid>/stat instead of -metrics")
	flag.StringVar(&c.serverProfile, "server-cpuprofile", "", "fanout: write the server's CPU profile of the sending phase to this file (GET /debug/pprof/profile next to -metrics; HS_METRICS_PPROF=true)")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), usageText)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "syncload: unexpected arguments %q (see -h)\n", flag.Args())
		os.Exit(2)
	}
	if err := c.check(); err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.maxDuration)
	defer cancel()

	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "syncload:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "syncload:", err)
			os.Exit(2)
		}
	}
	var failed bool
	var err error
	switch c.scenario {
	case "fanout":
		failed, err = runFanout(ctx, c)
	case "initial":
		err = runInitial(ctx, c)
	case "idle":
		err = runIdle(ctx, c)
	}
	if c.cpuProfile != "" {
		pprof.StopCPUProfile()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(1)
	}
	if failed {
		os.Exit(1)
	}
}

// Upper bounds of the flags, so a typo cannot turn a run into a flood.
const (
	maxReceivers    = 10000
	maxMessages     = 100000
	maxInitialItems = 1000000 // users × rooms + rooms × room-messages
)

func (c *config) check() error {
	switch c.scenario {
	case "fanout", "initial", "idle":
	default:
		return fmt.Errorf("-scenario %q: want fanout, initial or idle", c.scenario)
	}
	switch c.transport {
	case "longpoll", "sse", "ws":
	default:
		return fmt.Errorf("-transport %q: want longpoll, sse or ws", c.transport)
	}
	switch c.forceGC {
	case "auto", "on", "off":
	default:
		return fmt.Errorf("-force-gc %q: want on, off or auto", c.forceGC)
	}
	switch c.setPresence {
	case "", "online", "offline", "unavailable":
	default:
		return fmt.Errorf("-set-presence %q: want online, offline or unavailable", c.setPresence)
	}
	switch {
	case c.receivers < 1 || c.receivers > maxReceivers:
		return fmt.Errorf("-receivers must be in [1, %d]", maxReceivers)
	case c.messages < 1 || c.messages > maxMessages:
		return fmt.Errorf("-messages must be in [1, %d]", maxMessages)
	case c.rate <= 0:
		return errors.New("-rate must be positive")
	case c.timelineLimit < 1:
		return errors.New("-timeline-limit must be at least 1")
	case c.setupWorkers < 1 || c.connWorkers < 1 || c.initialConc < 1:
		return errors.New("-setup-concurrency, -connect-concurrency and -initial-concurrency must be at least 1")
	case c.pollTimeout < time.Second:
		return errors.New("-poll-timeout must be at least 1s")
	case c.users < 1 || c.rooms < 1 || c.roomMessages < 0:
		return errors.New("-users and -rooms must be at least 1, -room-messages at least 0")
	case int64(c.users)*int64(c.rooms)+int64(c.rooms)*int64(c.roomMessages) > maxInitialItems:
		return fmt.Errorf("-users × -rooms + -rooms × -room-messages must be at most %d", maxInitialItems)
	case c.samples < 1 || c.samples > 100:
		return errors.New("-samples must be in [1, 100]")
	case c.sampleInterval < 100*time.Millisecond || c.settle < 0 || c.drain < 0:
		return errors.New("-sample-interval must be at least 100ms; -settle and -drain not negative")
	case c.maxDuration <= 0:
		return errors.New("-max-duration must be positive")
	case c.pid < 0:
		return errors.New("-pid must not be negative")
	}
	if c.initialFilter != "" && !strings.HasPrefix(strings.TrimSpace(c.initialFilter), "{") {
		return errors.New("-initial-filter must be an inline JSON filter")
	}
	c.base = strings.TrimRight(c.base, "/")
	if err := loopbackURL("-base", c.base); err != nil {
		return err
	}
	if c.metrics == "" {
		c.metrics = c.base + "/metrics"
	}
	return loopbackURL("-metrics", c.metrics)
}

// loopbackURL accepts http(s) URLs whose host is a loopback address or localhost.
func loopbackURL(name, s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s %q is not an http(s) URL", name, s)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%s %q: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", name, s)
	}
	return nil
}
