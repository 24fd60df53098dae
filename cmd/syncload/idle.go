package main

import (
	"context"
	"fmt"
	"time"
)

// runIdle is the idle scenario: the server's memory per idle sync connection.
func runIdle(ctx context.Context, c config) error {
	h := newHS(c.base, c.receivers)
	defer h.close()
	server, err := h.hello(ctx)
	if err != nil {
		return err
	}
	m := newMetricsReader(c.metrics, c.pid)
	if _, err := m.read(ctx, append(idleSeries, "process_cpu_seconds_total")...); err != nil {
		return fmt.Errorf("the idle scenario reads the server's metrics: %w", err)
	}
	forceGC := c.forceGC == "on"
	if c.forceGC == "auto" {
		forceGC = m.gc(ctx) == nil
	}
	gcNote := "without forced garbage collections"
	if forceGC {
		gcNote = "each right after a forced garbage collection"
	}
	run := runID()
	fmt.Printf("syncload %s idle over %s: %d receivers, timeline limit %d, lazy_load_members %t; %s at %s, metrics %s\n",
		run, c.transport, c.receivers, c.timelineLimit, c.lazyMembers, server, c.base, c.metrics)
	_, _, rs, err := setupRoom(ctx, h, c, run, c.receivers, 0)
	if err != nil {
		return err
	}

	sleep(ctx, c.settle)
	before, spreadBefore, steadyBefore, err := m.steadySample(ctx, c.samples, c.sampleInterval, c.steadyTimeout, forceGC, idleSeries...)
	if err != nil {
		return err
	}

	rd := &reader{h: h, c: &c, transport: c.transport, connSem: make(chan struct{}, c.connWorkers)}
	t0 := time.Now()
	set := startReceivers(ctx, rd, rs, func(*receiver, time.Duration, *syncResponse) {})
	defer set.shutdown()
	if err := set.waitReady(ctx, c.receivers); err != nil {
		return err
	}
	fmt.Printf("receivers: %d %s connections up in %s\n", c.receivers, c.transport, round(time.Since(t0)))
	// CPU over the second half of the settling time (the samples may force garbage collections).
	sleep(ctx, c.settle/2)
	cpu0, err := m.cpuSeconds(ctx)
	if err != nil {
		return err
	}
	responses := rd.responses.Load()
	w0 := time.Now()
	sleep(ctx, c.settle-c.settle/2)
	cpu1, err := m.cpuSeconds(ctx)
	if err != nil {
		return err
	}
	window := time.Since(w0)
	if set.fatal.Load() > 0 {
		return fmt.Errorf("%d receivers refused by the server: %v", set.fatal.Load(), set.fatalErr.Load())
	}
	after, spreadAfter, steadyAfter, err := m.steadySample(ctx, c.samples, c.sampleInterval, c.steadyTimeout, forceGC, idleSeries...)
	if err != nil {
		return err
	}
	set.shutdown()
	if err := ctx.Err(); err != nil {
		return err
	}

	n := float64(c.receivers)
	steadiness := func(steady bool, spread float64) string {
		s := fmt.Sprintf("RSS spread %.1f MiB", spread/(1<<20))
		if !steady {
			s += ", NOT steady after -steady-timeout"
		}
		return s
	}
	fmt.Printf("samples before: %s; with the connections: %s\n", steadiness(steadyBefore, spreadBefore), steadiness(steadyAfter, spreadAfter))
	fmt.Printf("server metrics, median of %d consecutive steady samples %s apart, %s: before -> with %d idle %s connections (difference per connection)\n",
		c.samples, c.sampleInterval, gcNote, c.receivers, c.transport)
	for _, name := range idleSeries {
		b, a := before[name], after[name]
		if name == "go_goroutines" || name == "process_open_fds" {
			fmt.Printf("  %-30s %10.0f -> %10.0f  (%+.2f)\n", name, b, a, (a-b)/n)
		} else {
			fmt.Printf("  %-30s %7.1f MiB -> %7.1f MiB  (%+.1f KiB)\n", name, b/(1<<20), a/(1<<20), (a-b)/n/1024)
		}
	}
	per := func(name string) float64 { return (after[name] - before[name]) / n / 1024 }
	fmt.Printf("memory per idle %s connection: RSS %.1f KiB; Go heap in use %.1f KiB + goroutine stacks %.1f KiB = %.1f KiB\n",
		c.transport, per("process_resident_memory_bytes"), per("go_memstats_heap_inuse_bytes"),
		per("go_memstats_stack_inuse_bytes"), per("go_memstats_heap_inuse_bytes")+per("go_memstats_stack_inuse_bytes"))
	if w := window.Seconds(); w > 0 {
		fmt.Printf("server CPU while idle: %.3f s in %s (%.1f%% of one core)\n", cpu1-cpu0, round(window), 100*(cpu1-cpu0)/w)
	}
	fmt.Printf("sync responses from the start of the CPU window to the end of sampling: %d (an idle stream gets none; a long poll returns after -poll-timeout)\n",
		rd.responses.Load()-responses)
	counters, _ := transportCounters(rs)
	fmt.Println(counters)
	return nil
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
