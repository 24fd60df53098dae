package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// runID names a run's users and rooms.
func runID() string { return strconv.FormatInt(time.Now().UnixNano(), 36) }

// setupRoom registers a sender and n receivers, creates a public room, joins every receiver to
// it and gives each a stored filter and an initial sync, so every receiver's since token is past
// all the joins. The initial sync is kept light (one timeline event, lazy-loaded members); the
// receivers' own loops use the stored filter.
func setupRoom(ctx context.Context, h *hs, c config, run string, n, messages int) (sender user, roomID string, rs []*receiver, err error) {
	t0 := time.Now()
	sender, err = h.register(ctx, "syncload_"+run+"_sender")
	if err != nil {
		return
	}
	rs = make([]*receiver, n)
	err = parallel(ctx, n, c.setupWorkers, func(ctx context.Context, i int) error {
		u, err := h.register(ctx, fmt.Sprintf("syncload_%s_r%d", run, i))
		rs[i] = &receiver{user: u, seen: make([]uint16, messages), delay: make([]time.Duration, messages), lastSeq: -1}
		return err
	})
	if err != nil {
		return
	}
	tRegister := time.Since(t0)

	t0 = time.Now()
	if roomID, err = h.createRoom(ctx, sender, "syncload "+run); err != nil {
		return
	}
	err = parallel(ctx, n, c.setupWorkers, func(ctx context.Context, i int) error {
		return h.join(ctx, rs[i].user, roomID)
	})
	if err != nil {
		return
	}
	tJoin := time.Since(t0)

	t0 = time.Now()
	loopFilter := map[string]any{"room": map[string]any{
		"timeline": map[string]any{"limit": c.timelineLimit},
		"state":    map[string]any{"lazy_load_members": c.lazyMembers},
	}}
	initialFilter := `{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}`
	err = parallel(ctx, n, c.setupWorkers, func(ctx context.Context, i int) error {
		r := rs[i]
		var err error
		if r.filterID, err = h.uploadFilter(ctx, r.user, loopFilter); err != nil {
			return err
		}
		var s syncResponse
		if err := h.call(ctx, "GET", "/_matrix/client/v3/sync?"+syncQuery(initialFilter, "", 0, c.setPresence), r.token, nil, &s); err != nil {
			return fmt.Errorf("initial sync of %s: %w", r.userID, err)
		}
		if _, ok := s.Rooms.Join[roomID]; !ok {
			return fmt.Errorf("initial sync of %s: the room %s is not in rooms.join", r.userID, roomID)
		}
		r.since = s.NextBatch
		return nil
	})
	if err != nil {
		return
	}
	fmt.Printf("setup: %d users registered in %s, %d joins in %s, filters and initial syncs in %s\n",
		n+1, round(tRegister), n, round(tJoin), round(time.Since(t0)))
	return
}

// receiverSet runs receivers on their transport until stop.
type receiverSet struct {
	ready    atomic.Int64
	fatal    atomic.Int64
	fatalErr atomic.Value // string
	wg       sync.WaitGroup
	stop     context.CancelFunc
}

func startReceivers(ctx context.Context, rd *reader, rs []*receiver, handle handler) *receiverSet {
	ctx, cancel := context.WithCancel(ctx)
	set := &receiverSet{stop: cancel}
	for _, r := range rs {
		set.wg.Add(1)
		go func() {
			defer set.wg.Done()
			if err := rd.run(ctx, r, func() { set.ready.Add(1) }, handle); err != nil {
				set.fatal.Add(1)
				set.fatalErr.CompareAndSwap(nil, err.Error())
			}
		}()
	}
	return set
}

// waitReady waits until every receiver has sent its first long poll or opened its stream.
func (set *receiverSet) waitReady(ctx context.Context, n int) error {
	for set.ready.Load() < int64(n) && ctx.Err() == nil {
		if set.fatal.Load() > 0 {
			return fmt.Errorf("%d receivers refused by the server: %v", set.fatal.Load(), set.fatalErr.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return ctx.Err()
}

func (set *receiverSet) shutdown() {
	set.stop()
	set.wg.Wait()
}

// transportCounters sums the receivers' transport counters into one line.
func transportCounters(rs []*receiver) (line string, protocol int) {
	var responses, errs, reconnects, tooSlow, keepAlives int
	lastErr := ""
	for _, r := range rs {
		responses += r.responses
		errs += r.errors
		reconnects += r.reconnects
		tooSlow += r.tooSlow
		keepAlives += r.keepAlives
		protocol += r.protocol
		if r.lastErr != "" {
			lastErr = r.lastErr
		}
	}
	line = fmt.Sprintf("sync responses %d, errors %d, reconnections %d (WebSocket too slow: %d), SSE keep-alives %d, protocol violations %d",
		responses, errs, reconnects, tooSlow, keepAlives, protocol)
	if lastErr != "" {
		line += "\nlast receiver error: " + lastErr
	}
	return line, protocol
}

// runFanout is the fanout scenario. failed: messages were missed or duplicated, or the stream
// broke its protocol.
func runFanout(ctx context.Context, c config) (failed bool, err error) {
	h := newHS(c.base, c.receivers)
	defer h.close()
	server, err := h.hello(ctx)
	if err != nil {
		return false, err
	}
	run := runID()
	fmt.Printf("syncload %s fanout over %s: %d receivers, %d messages at %g/s, timeline limit %d, lazy_load_members %t; %s at %s\n",
		run, c.transport, c.receivers, c.messages, c.rate, c.timelineLimit, c.lazyMembers, server, c.base)
	sender, roomID, rs, err := setupRoom(ctx, h, c, run, c.receivers, c.messages)
	if err != nil {
		return false, err
	}

	var delivered atomic.Int64 // first arrivals, all receivers
	prefix := "syncload " + run + " #"
	handle := func(r *receiver, at time.Duration, s *syncResponse) {
		room, ok := s.Rooms.Join[roomID]
		if !ok {
			return
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
	rd := &reader{h: h, c: &c, transport: c.transport, connSem: make(chan struct{}, c.connWorkers)}
	t0 := time.Now()
	set := startReceivers(ctx, rd, rs, handle)
	defer set.shutdown()
	if err := set.waitReady(ctx, c.receivers); err != nil {
		return false, err
	}
	fmt.Printf("receivers: %d %s connections up in %s\n", c.receivers, c.transport, round(time.Since(t0)))
	// Let every long poll (or the stream's first internal poll) park on the server.
	time.Sleep(time.Second + time.Duration(c.receivers)*time.Millisecond)
	if set.fatal.Load() > 0 {
		return false, fmt.Errorf("%d receivers refused by the server: %v", set.fatal.Load(), set.fatalErr.Load())
	}

	m := newMetricsReader(c.metrics, c.pid)
	cpuBefore, cpuErr := m.cpuSeconds(ctx)
	toolBefore := toolCPU()
	machineBefore, machineOK := machineCPU()
	responsesBefore := rd.responses.Load()
	profileDone := make(chan error, 1)
	if c.serverProfile != "" { // the sending phase, which is when the server is busiest
		go func() {
			profileDone <- m.profileCPU(ctx, time.Duration(float64(c.messages)/c.rate*float64(time.Second)), c.serverProfile)
		}()
	}

	// Sender: one PUT after the other, on a fixed schedule.
	interval := time.Duration(float64(time.Second) / c.rate)
	sendLat := make([]time.Duration, 0, c.messages)
	sentOK := make([]bool, c.messages)
	sent, sendFailures := 0, 0
	send, err := newPollConn(c.base)
	if err != nil {
		return false, err
	}
	defer send.close()
	sendStart := time.Now()
	for i := 0; i < c.messages && ctx.Err() == nil; i++ {
		if d := time.Until(sendStart.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(d):
			}
		}
		path := []byte(fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/syncload-%s-%d", url.PathEscape(roomID), run, i))
		sentAt := h.now()
		body, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": fmt.Sprintf("%s%d sent=%d", prefix, i, sentAt.Nanoseconds())})
		var err error
		for attempt := 0; attempt < 3; attempt++ { // same txn ID: a retry cannot duplicate
			if _, _, err = send.do(ctx, h, "PUT", path, sender.token, body, 30*time.Second); err == nil {
				break
			}
		}
		if err != nil {
			sendFailures++
			fmt.Fprintf(os.Stderr, "syncload: message %d not sent: %v\n", i, err)
			continue
		}
		sendLat = append(sendLat, h.now()-sentAt)
		sentOK[i] = true
		sent++
	}
	sendDur := time.Since(sendStart)

	// Wait for the deliveries, at most -drain.
	expected := int64(sent) * int64(c.receivers)
	drainEnd := time.Now().Add(c.drain)
	for delivered.Load() < expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	window := time.Since(sendStart)
	cpuAfter, cpuErr2 := m.cpuSeconds(ctx)
	toolUsed := toolCPU() - toolBefore
	machineAfter, machineOK2 := machineCPU()
	responsesIn := rd.responses.Load() - responsesBefore
	set.shutdown()
	if c.serverProfile != "" {
		if err := <-profileDone; err != nil {
			fmt.Fprintf(os.Stderr, "syncload: server CPU profile: %v\n", err)
		}
	}
	if err := ctx.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "syncload: stopped early: %v\n", err)
	}

	// Results.
	var missed, duplicated int
	var all []time.Duration
	fanout := make([]time.Duration, 0, sent) // per message: until the last receiver had it
	lastAt := make([]time.Duration, c.messages)
	var outOfOrder, limited, unsent int
	for _, r := range rs {
		for i := range c.messages {
			n := int(r.seen[i])
			if !sentOK[i] {
				unsent += n // arrived although its PUT failed: counted, not expected
				continue
			}
			if n == 0 {
				missed++
				continue
			}
			duplicated += n - 1
			all = append(all, r.delay[i])
			lastAt[i] = max(lastAt[i], r.delay[i])
		}
		outOfOrder += r.outOfOrder
		limited += r.limited
	}
	for i := range c.messages {
		if sentOK[i] {
			fanout = append(fanout, lastAt[i])
		}
	}
	slices.Sort(all)
	slices.Sort(fanout)
	slices.Sort(sendLat)

	fmt.Printf("send: %d/%d messages in %s (%.1f/s); send latency %s\n",
		sent, c.messages, round(sendDur), float64(sent)/sendDur.Seconds(), quantiles(sendLat))
	fmt.Printf("receivers %d over %s, messages %d, delivered/expected %d/%d\n", c.receivers, c.transport, sent, len(all), expected)
	fmt.Printf("delivery latency (send -> read by the receiver): %s\n", quantiles(all))
	fmt.Printf("fan-out per message (until the last receiver has it): %s\n", quantiles(fanout))
	fmt.Printf("slowest messages (index: fan-out): %s\n", slowest(lastAt, sentOK, 5))
	fmt.Printf("missed %d, duplicated %d; out of order %d, limited timelines %d\n", missed, duplicated, outOfOrder, limited)
	counters, protocol := transportCounters(rs)
	fmt.Println(counters)
	if cpuErr == nil && cpuErr2 == nil {
		fmt.Printf("CPU while sending and draining (%s): server %.1f s (%.0f%% of one core), syncload %.1f s (%.0f%%)\n",
			round(window), cpuAfter-cpuBefore, 100*(cpuAfter-cpuBefore)/window.Seconds(),
			toolUsed.Seconds(), 100*toolUsed.Seconds()/window.Seconds())
		if responsesIn > 0 {
			fmt.Printf("CPU per sync response (%d in that time): server %.1f µs, syncload %.1f µs\n", responsesIn,
				1e6*(cpuAfter-cpuBefore)/float64(responsesIn), 1e6*toolUsed.Seconds()/float64(responsesIn))
		}
	} else {
		fmt.Printf("CPU while sending and draining (%s): syncload %.1f s; server unknown (%s: %v)\n",
			round(window), toolUsed.Seconds(), c.metrics, firstErr(cpuErr, cpuErr2))
	}
	if machineOK && machineOK2 && cpuErr == nil && cpuErr2 == nil {
		busy := machineAfter - machineBefore
		others := busy.Seconds() - (cpuAfter - cpuBefore) - toolUsed.Seconds()
		fmt.Printf("machine CPU in that time: %.1f s busy; other processes (database server, other work) %.1f s\n", busy.Seconds(), max(others, 0))
	}
	if sendFailures > 0 || unsent > 0 {
		fmt.Printf("send failures %d (arrived anyway: %d)\n", sendFailures, unsent)
	}
	if missed > 0 || duplicated > 0 {
		fmt.Println("FAIL: every receiver must get every message exactly once")
	}
	if protocol > 0 {
		fmt.Println("FAIL: protocol violations")
	}
	return missed > 0 || duplicated > 0 || protocol > 0, nil
}

// slowest lists the n messages whose fan-out took longest, slowest first: whether the tail of the
// latencies belongs to a few messages (the start of the run, a pause of the host) or to all.
func slowest(lastAt []time.Duration, sentOK []bool, n int) string {
	var idx []int
	for i := range lastAt {
		if sentOK[i] {
			idx = append(idx, i)
		}
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(lastAt[b], lastAt[a]) })
	var parts []string
	for _, i := range idx[:min(n, len(idx))] {
		parts = append(parts, fmt.Sprintf("%d: %s", i, ms(lastAt[i])))
	}
	return strings.Join(parts, ", ")
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
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
