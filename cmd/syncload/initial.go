package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"time"
)

// runInitial is the initial scenario: the time of an initial /sync for users in many rooms.
func runInitial(ctx context.Context, c config) error {
	h := newHS(c.base, max(c.setupWorkers, c.initialConc))
	defer h.close()
	server, err := h.hello(ctx)
	if err != nil {
		return err
	}
	run := runID()
	filterDesc := c.initialFilter
	if filterDesc == "" {
		filterDesc = "none"
	}
	fmt.Printf("syncload %s initial: %d users in %d rooms of %d messages, filter %s, %d at a time; %s at %s\n",
		run, c.users, c.rooms, c.roomMessages, filterDesc, c.initialConc, server, c.base)

	t0 := time.Now()
	creator, err := h.register(ctx, "syncload_"+run+"_creator")
	if err != nil {
		return err
	}
	users := make([]user, c.users)
	err = parallel(ctx, c.users, c.setupWorkers, func(ctx context.Context, i int) error {
		var err error
		users[i], err = h.register(ctx, fmt.Sprintf("syncload_%s_u%d", run, i))
		return err
	})
	if err != nil {
		return err
	}
	rooms := make([]string, c.rooms)
	err = parallel(ctx, c.rooms, c.setupWorkers, func(ctx context.Context, i int) error {
		var err error
		rooms[i], err = h.createRoom(ctx, creator, fmt.Sprintf("syncload %s room %d", run, i))
		return err
	})
	if err != nil {
		return err
	}
	err = parallel(ctx, c.users*c.rooms, c.setupWorkers, func(ctx context.Context, i int) error {
		return h.join(ctx, users[i%c.users], rooms[i/c.users])
	})
	if err != nil {
		return err
	}
	tMembers := time.Since(t0)
	// Messages, from the members in turn; consecutive indexes go to different rooms so the
	// workers write to many rooms at once.
	t0 = time.Now()
	err = parallel(ctx, c.rooms*c.roomMessages, c.setupWorkers, func(ctx context.Context, i int) error {
		room, j := i%c.rooms, i/c.rooms
		u := users[(room+j)%c.users]
		body := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("syncload %s room %d message %d", run, room, j)}
		path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/syncload-%s-%d", url.PathEscape(rooms[room]), run, i)
		var err error
		for attempt := 0; attempt < 3; attempt++ { // same txn ID: a retry cannot duplicate
			if err = h.call(ctx, "PUT", path, u.token, body, nil); err == nil {
				return nil
			}
		}
		return fmt.Errorf("send to %s: %w", rooms[room], err)
	})
	if err != nil {
		return err
	}
	fmt.Printf("setup: %d users, %d rooms and %d joins in %s, %d messages in %s\n",
		c.users+1, c.rooms, c.users*c.rooms, round(tMembers), c.rooms*c.roomMessages, round(time.Since(t0)))

	// The timed initial syncs.
	times := make([]time.Duration, c.users)
	sizes := make([]int, c.users)
	events := make([]int, c.users)
	err = parallel(ctx, c.users, c.initialConc, func(ctx context.Context, i int) error {
		u := users[i]
		start := h.now()
		raw, at, err := h.sync(ctx, u.token, "", c.initialFilter, 0, "")
		if err != nil {
			return fmt.Errorf("initial sync of %s: %w", u.userID, err)
		}
		times[i], sizes[i] = at-start, len(raw)
		var s syncResponse
		if err := json.Unmarshal(raw, &s); err != nil {
			return fmt.Errorf("initial sync of %s: %w", u.userID, err)
		}
		for _, r := range rooms {
			room, ok := s.Rooms.Join[r]
			if !ok {
				return fmt.Errorf("initial sync of %s: room %s is not in rooms.join", u.userID, r)
			}
			events[i] += len(room.Timeline.Events)
		}
		return nil
	})
	if err != nil {
		return err
	}
	first := times[0] // users[0] starts first: the server's caches are cold
	var total time.Duration
	var bytes, evs int
	for i := range c.users {
		total += times[i]
		bytes += sizes[i]
		evs += events[i]
	}
	slices.Sort(times)
	fmt.Printf("initial /sync (request -> whole response read), %d users: %s, mean %s; the first one %s\n",
		c.users, quantiles(times), ms(total/time.Duration(c.users)), ms(first))
	fmt.Printf("response: %d rooms, %.0f timeline events, %.0f KiB on average\n",
		c.rooms, float64(evs)/float64(c.users), float64(bytes)/float64(c.users)/1024)
	return nil
}
