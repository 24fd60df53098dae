// Command syncload measures /sync fan-out: how long a message takes to reach many receivers that
// long-poll GET /sync, and whether every receiver gets every message exactly once.
//
//	go run ./cmd/syncload -base http://127.0.0.1:8008 -receivers 1000 -messages 200 -rate 20
//
// Against a server with open registration and HS_RATE_LIMITS_ENABLED=false it registers one
// sender and -receivers users, creates a public room, joins every receiver to it and gives each
// an initial sync (so every since token is past the joins). Then every receiver runs its own
// /sync loop (its own since token, a stored filter with timeline limit -timeline-limit, and
// lazy_load_members if -lazy-load-members) while the sender PUTs -messages m.room.message events
// at -rate per second, one after the other (if a PUT takes longer than 1/rate, the achieved rate
// is lower; it is printed). Each body
// carries the message's sequence number and its send time (nanoseconds since the tool started,
// taken just before the PUT, on the tool's monotonic clock). A receiver records, per message, the
// delay from that send time to the moment its /sync response was read. At the end it prints
// delivered/expected, the p50/p99/max delivery latency, the per-message fan-out time (until the
// last receiver has it), and messages missed or duplicated (both must be 0); the exit status is 1
// if any were, or if the run failed. Also counted: deliveries out of send order, limited timelines
// (a receiver fell more than the timeline limit behind; the tool does not back-paginate, so those
// gaps show up as missed) and failed /sync requests (retried with the same since token).
//
// Bounded: only loopback base URLs are accepted, the sender stops after -messages, the receivers
// stop when everything has arrived or -drain after the last send, and -max-duration caps the
// whole run. The users and the room stay on the server (names start with syncload_<run>).
//
// The tool and the server share the machine's CPUs, so the figures include the tool's own cost
// of reading and decoding receivers × messages responses.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type config struct {
	base          string
	receivers     int
	messages      int
	rate          float64
	timelineLimit int
	lazyMembers   bool
	pollTimeout   time.Duration
	drain         time.Duration
	maxDuration   time.Duration
	setupWorkers  int
}

func main() {
	var c config
	flag.StringVar(&c.base, "base", "http://127.0.0.1:8008", "homeserver base URL (loopback only)")
	flag.IntVar(&c.receivers, "receivers", 1000, "receiving users, each with its own /sync loop")
	flag.IntVar(&c.messages, "messages", 200, "messages the sender posts")
	flag.Float64Var(&c.rate, "rate", 20, "messages per second")
	flag.IntVar(&c.timelineLimit, "timeline-limit", 50, "timeline limit of the receivers' sync filter")
	flag.BoolVar(&c.lazyMembers, "lazy-load-members", false, "set lazy_load_members in the receivers' sync filter (as Element does)")
	flag.DurationVar(&c.pollTimeout, "poll-timeout", 30*time.Second, "long-poll timeout asked of the server")
	flag.DurationVar(&c.drain, "drain", 30*time.Second, "how long to wait for deliveries after the last send")
	flag.DurationVar(&c.maxDuration, "max-duration", 15*time.Minute, "hard limit for the whole run, setup included")
	flag.IntVar(&c.setupWorkers, "setup-concurrency", 16, "concurrent requests while registering and joining")
	flag.Parse()
	if err := c.check(); err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, c.maxDuration)
	defer cancel()

	res, err := run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "syncload:", err)
		os.Exit(1)
	}
	if res.missed > 0 || res.duplicated > 0 {
		os.Exit(1)
	}
}

func (c *config) check() error {
	switch {
	case c.receivers < 1:
		return errors.New("-receivers must be at least 1")
	case c.messages < 1:
		return errors.New("-messages must be at least 1")
	case c.rate <= 0:
		return errors.New("-rate must be positive")
	case c.timelineLimit < 1:
		return errors.New("-timeline-limit must be at least 1")
	case c.setupWorkers < 1:
		return errors.New("-setup-concurrency must be at least 1")
	case c.pollTimeout < time.Second:
		return errors.New("-poll-timeout must be at least 1s")
	}
	c.base = strings.TrimRight(c.base, "/")
	u, err := url.Parse(c.base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("-base %q is not an http(s) URL", c.base)
	}
	host := u.Hostname()
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-base %q: only loopback addresses (127.0.0.0/8, ::1, localhost) are allowed", c.base)
	}
	return nil
}

// ---------------------------------------------------------------------------------------------
// HTTP

type hs struct {
	base   string
	client *http.Client
}

type matrixError struct {
	status int
	body   string
}

func (e *matrixError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// call sends a JSON request and decodes a 200 answer into out (if not nil).
func (h *hs) call(ctx context.Context, method, path, token string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return &matrixError{status: resp.StatusCode, body: strings.TrimSpace(string(raw))}
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

type user struct {
	userID, token string
}

func (h *hs) register(ctx context.Context, localpart string) (user, error) {
	body := map[string]any{"username": localpart, "password": "syncload password " + localpart,
		"initial_device_display_name": "syncload"}
	var challenge struct {
		Session string `json:"session"`
	}
	err := h.call(ctx, "POST", "/_matrix/client/v3/register", "", body, nil)
	var me *matrixError
	if !errors.As(err, &me) || me.status != http.StatusUnauthorized {
		return user{}, fmt.Errorf("register %s: expected a 401 UIA challenge, got %v", localpart, err)
	}
	if err := json.Unmarshal([]byte(me.body), &challenge); err != nil || challenge.Session == "" {
		return user{}, fmt.Errorf("register %s: no UIA session in %s", localpart, me.body)
	}
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": challenge.Session}
	var res struct {
		UserID      string `json:"user_id"`
		AccessToken string `json:"access_token"`
	}
	if err := h.call(ctx, "POST", "/_matrix/client/v3/register", "", body, &res); err != nil {
		return user{}, fmt.Errorf("register %s (open registration on, rate limits off?): %w", localpart, err)
	}
	return user{userID: res.UserID, token: res.AccessToken}, nil
}

// syncResponse holds the parts of a /sync answer the tool reads.
type syncResponse struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join map[string]struct {
			Timeline struct {
				Events []struct {
					Type    string `json:"type"`
					Sender  string `json:"sender"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"events"`
				Limited bool `json:"limited"`
			} `json:"timeline"`
		} `json:"join"`
	} `json:"rooms"`
}

func (h *hs) sync(ctx context.Context, token, since, filter string, timeout time.Duration, out *syncResponse) error {
	q := url.Values{"filter": {filter}, "timeout": {strconv.FormatInt(timeout.Milliseconds(), 10)}}
	if since != "" {
		q.Set("since", since)
	}
	// The server answers after `timeout` at the latest; allow it some slack before giving up.
	ctx, cancel := context.WithTimeout(ctx, timeout+30*time.Second)
	defer cancel()
	return h.call(ctx, "GET", "/_matrix/client/v3/sync?"+q.Encode(), token, nil, out)
}

// parallel runs fn(i) for i in [0, n) on `workers` goroutines; the first error stops the rest.
func parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < min(workers, n); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					once.Do(func() { first = err; cancel() })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// ---------------------------------------------------------------------------------------------
// The run

// receiver is one receiving user and what its /sync loop saw.
type receiver struct {
	user
	filterID string
	since    string
	seen     []uint16        // per message: how often it arrived
	delay    []time.Duration // per message: send -> first arrival
	lastSeq  int
	// counters
	outOfOrder, limited, errors, polls int
}

type result struct {
	missed, duplicated int
}

func run(ctx context.Context, c config) (result, error) {
	start := time.Now()
	h := &hs{base: c.base, client: &http.Client{Transport: &http.Transport{
		Proxy:               nil, // loopback: never through a proxy
		MaxIdleConns:        c.receivers + 64,
		MaxIdleConnsPerHost: c.receivers + 64,
		IdleConnTimeout:     2 * time.Minute,
		DisableCompression:  true,
	}}}
	defer h.client.CloseIdleConnections()
	var versions struct {
		Versions []string `json:"versions"`
	}
	if err := h.call(ctx, "GET", "/_matrix/client/versions", "", nil, &versions); err != nil || len(versions.Versions) == 0 {
		return result{}, fmt.Errorf("no homeserver at %s (GET /_matrix/client/versions: %v)", c.base, err)
	}
	run := strconv.FormatInt(time.Now().UnixNano(), 36)
	fmt.Printf("syncload %s: %d receivers, %d messages at %g/s, timeline limit %d, lazy_load_members %t, %s\n",
		run, c.receivers, c.messages, c.rate, c.timelineLimit, c.lazyMembers, c.base)

	// Users.
	t0 := time.Now()
	sender, err := h.register(ctx, "syncload_"+run+"_sender")
	if err != nil {
		return result{}, err
	}
	rs := make([]*receiver, c.receivers)
	err = parallel(ctx, c.receivers, c.setupWorkers, func(ctx context.Context, i int) error {
		u, err := h.register(ctx, fmt.Sprintf("syncload_%s_r%d", run, i))
		rs[i] = &receiver{user: u, seen: make([]uint16, c.messages), delay: make([]time.Duration, c.messages), lastSeq: -1}
		return err
	})
	if err != nil {
		return result{}, err
	}
	tRegister := time.Since(t0)

	// The room and the joins.
	t0 = time.Now()
	var created struct {
		RoomID string `json:"room_id"`
	}
	err = h.call(ctx, "POST", "/_matrix/client/v3/createRoom", sender.token,
		map[string]any{"preset": "public_chat", "name": "syncload " + run}, &created)
	if err != nil {
		return result{}, fmt.Errorf("createRoom: %w", err)
	}
	roomID := created.RoomID
	err = parallel(ctx, c.receivers, c.setupWorkers, func(ctx context.Context, i int) error {
		if err := h.call(ctx, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", rs[i].token,
			map[string]any{}, nil); err != nil {
			return fmt.Errorf("join %s: %w", rs[i].userID, err)
		}
		return nil
	})
	if err != nil {
		return result{}, err
	}
	tJoin := time.Since(t0)

	// Filters and initial syncs: every since token is past all the joins. The initial sync is
	// kept light (one timeline event, lazy-loaded members); the loops use the stored filter.
	t0 = time.Now()
	loopFilter := map[string]any{"room": map[string]any{
		"timeline": map[string]any{"limit": c.timelineLimit},
		"state":    map[string]any{"lazy_load_members": c.lazyMembers},
	}}
	initialFilter := `{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`
	err = parallel(ctx, c.receivers, c.setupWorkers, func(ctx context.Context, i int) error {
		r := rs[i]
		var f struct {
			FilterID string `json:"filter_id"`
		}
		if err := h.call(ctx, "POST", "/_matrix/client/v3/user/"+url.PathEscape(r.userID)+"/filter", r.token,
			loopFilter, &f); err != nil {
			return fmt.Errorf("upload filter for %s: %w", r.userID, err)
		}
		r.filterID = f.FilterID
		var s syncResponse
		if err := h.sync(ctx, r.token, "", initialFilter, 0, &s); err != nil {
			return fmt.Errorf("initial sync of %s: %w", r.userID, err)
		}
		if _, ok := s.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("initial sync of %s: the room %s is not in rooms.join", r.userID, roomID)
		}
		r.since = s.NextBatch
		return nil
	})
	if err != nil {
		return result{}, err
	}
	tInitial := time.Since(t0)
	fmt.Printf("setup: %d users registered in %s, %d joins in %s, filters and initial syncs in %s\n",
		c.receivers+1, round(tRegister), c.receivers, round(tJoin), round(tInitial))

	// Receivers.
	expectedPerReceiver := atomic.Int64{} // messages sent successfully so far
	var delivered atomic.Int64            // first arrivals, all receivers
	var firstPolls atomic.Int64
	recvCtx, stopReceivers := context.WithCancel(ctx)
	defer stopReceivers()
	var wg sync.WaitGroup
	prefix := "syncload " + run + " #"
	for _, r := range rs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var s syncResponse
			first := true
			backoff := 100 * time.Millisecond
			for recvCtx.Err() == nil {
				if first {
					firstPolls.Add(1)
					first = false
				}
				s = syncResponse{}
				err := h.sync(recvCtx, r.token, r.since, r.filterID, c.pollTimeout, &s)
				at := time.Since(start)
				if err != nil {
					if recvCtx.Err() != nil {
						return
					}
					r.errors++
					select {
					case <-recvCtx.Done():
						return
					case <-time.After(backoff):
					}
					backoff = min(2*backoff, 2*time.Second)
					continue
				}
				backoff = 100 * time.Millisecond
				r.polls++
				r.since = s.NextBatch
				room, ok := s.Rooms.Join[roomID]
				if !ok {
					continue
				}
				if room.Timeline.Limited {
					r.limited++
				}
				for _, ev := range room.Timeline.Events {
					if ev.Type != "m.room.message" || ev.Sender != sender.userID {
						continue
					}
					seq, sentAt, ok := parseBody(ev.Content.Body, prefix)
					if !ok || seq < 0 || seq >= c.messages {
						continue
					}
					r.seen[seq]++
					if r.seen[seq] == 1 {
						r.delay[seq] = at - sentAt
						delivered.Add(1)
					}
					if seq < r.lastSeq {
						r.outOfOrder++
					}
					r.lastSeq = max(r.lastSeq, seq)
				}
			}
		}()
	}
	// Let every loop send its first long poll and the server park it.
	for firstPolls.Load() < int64(c.receivers) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(time.Second + time.Duration(c.receivers)*time.Millisecond)

	// Sender: one PUT after the other, on a fixed schedule.
	interval := time.Duration(float64(time.Second) / c.rate)
	sendLat := make([]time.Duration, 0, c.messages)
	sentOK := make([]bool, c.messages)
	sendFailures := 0
	sendStart := time.Now()
	for i := 0; i < c.messages && ctx.Err() == nil; i++ {
		if d := time.Until(sendStart.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		sentAt := time.Since(start)
		body := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("%s%d sent=%d", prefix, i, sentAt.Nanoseconds())}
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/syncload-%s-%d", url.PathEscape(roomID), run, i)
		var err error
		for attempt := 0; attempt < 3; attempt++ { // same txn ID: a retry cannot duplicate
			if err = h.call(ctx, "PUT", path, sender.token, body, nil); err == nil {
				break
			}
		}
		if err != nil {
			sendFailures++
			fmt.Fprintf(os.Stderr, "syncload: message %d not sent: %v\n", i, err)
			continue
		}
		sendLat = append(sendLat, time.Since(start)-sentAt)
		sentOK[i] = true
		expectedPerReceiver.Add(1)
	}
	sendDur := time.Since(sendStart)
	sent := int(expectedPerReceiver.Load())

	// Wait for the deliveries, at most -drain.
	expected := int64(sent) * int64(c.receivers)
	drainEnd := time.Now().Add(c.drain)
	for delivered.Load() < expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	stopReceivers()
	wg.Wait()
	if err := ctx.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "syncload: stopped early: %v\n", err)
	}

	// Results.
	var res result
	var all []time.Duration
	fanout := make([]time.Duration, 0, sent) // per message: until the last receiver had it
	lastAt := make([]time.Duration, c.messages)
	var outOfOrder, limited, syncErrors, polls, unsent int
	for _, r := range rs {
		for i := range c.messages {
			n := int(r.seen[i])
			if !sentOK[i] {
				unsent += n // arrived although its PUT failed: counted, not expected
				continue
			}
			switch {
			case n == 0:
				res.missed++
			default:
				res.duplicated += n - 1
				all = append(all, r.delay[i])
				lastAt[i] = max(lastAt[i], r.delay[i])
			}
		}
		outOfOrder += r.outOfOrder
		limited += r.limited
		syncErrors += r.errors
		polls += r.polls
	}
	for i := range c.messages {
		if sentOK[i] {
			fanout = append(fanout, lastAt[i])
		}
	}
	slices.Sort(all)
	slices.Sort(fanout)
	slices.Sort(sendLat)

	fmt.Printf("send: %d/%d messages in %s (%.1f/s); send latency p50 %s p99 %s max %s\n",
		sent, c.messages, round(sendDur), float64(sent)/sendDur.Seconds(), ms(pct(sendLat, 0.50)), ms(pct(sendLat, 0.99)), ms(pct(sendLat, 1)))
	fmt.Printf("receivers %d, messages %d, delivered/expected %d/%d\n", c.receivers, sent, len(all), expected)
	fmt.Printf("delivery latency (send -> /sync response read): p50 %s p99 %s max %s\n",
		ms(pct(all, 0.50)), ms(pct(all, 0.99)), ms(pct(all, 1)))
	fmt.Printf("fan-out per message (until the last receiver has it): p50 %s p99 %s max %s\n",
		ms(pct(fanout, 0.50)), ms(pct(fanout, 0.99)), ms(pct(fanout, 1)))
	fmt.Printf("missed %d, duplicated %d; out of order %d, limited timelines %d, /sync errors %d, /sync responses %d\n",
		res.missed, res.duplicated, outOfOrder, limited, syncErrors, polls)
	if sendFailures > 0 || unsent > 0 {
		fmt.Printf("send failures %d (arrived anyway: %d)\n", sendFailures, unsent)
	}
	if res.missed > 0 || res.duplicated > 0 {
		fmt.Println("FAIL: every receiver must get every message exactly once")
	}
	return res, nil
}

// parseBody reads "<prefix><seq> sent=<ns>".
func parseBody(body, prefix string) (seq int, sentAt time.Duration, ok bool) {
	rest, found := strings.CutPrefix(body, prefix)
	if !found {
		return 0, 0, false
	}
	seqStr, sentStr, found := strings.Cut(rest, " sent=")
	if !found {
		return 0, 0, false
	}
	seq, err1 := strconv.Atoi(seqStr)
	ns, err2 := strconv.ParseInt(sentStr, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, false
	}
	return seq, time.Duration(ns), true
}

// pct is the p-quantile of sorted durations (p=1: the maximum).
func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func round(d time.Duration) time.Duration { return d.Round(10 * time.Millisecond) }
