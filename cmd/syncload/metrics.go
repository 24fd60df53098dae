package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hearthmx/homeserver/cmd/internal/proc"
)

// metricsReader reads a few unlabelled series from the server's Prometheus text endpoint.
type metricsReader struct {
	url    string
	pid    int    // the server's process ID: CPU time from /proc/<pid>/stat (0: from the metrics)
	gcURL  string // the server's pprof heap profile with gc=1: a garbage collection on request ("" if none)
	client *http.Client
}

func newMetricsReader(u string, pid int) *metricsReader {
	m := &metricsReader{url: u, pid: pid, client: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableCompression: true}}}
	if pu, err := url.Parse(u); err == nil {
		m.gcURL = pu.Scheme + "://" + pu.Host + "/debug/pprof/heap?gc=1"
	}
	return m
}

// gc asks the server for a garbage collection (through its pprof endpoint, served when
// metrics.pprof is on, next to the metrics).
func (m *metricsReader) gc(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "GET", m.gcURL, nil)
	if err != nil {
		return err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d (is metrics.pprof on? HS_METRICS_PPROF=true)", m.gcURL, resp.StatusCode)
	}
	return nil
}

// The series the idle scenario compares.
var idleSeries = []string{
	"process_resident_memory_bytes",
	"go_memstats_heap_inuse_bytes",
	"go_memstats_stack_inuse_bytes",
	"go_goroutines",
	"process_open_fds",
}

// read returns the values of the named series (unlabelled samples only).
func (m *metricsReader) read(ctx context.Context, names ...string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", m.url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := m.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", m.url, resp.StatusCode)
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make(map[string]float64, len(names))
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 16<<20))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if !ok || !want[name] {
			continue
		}
		fields := strings.Fields(rest) // value [timestamp]
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %s: %v", m.url, name, err)
		}
		out[name] = v
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("GET %s: no %s (not a Prometheus endpoint of this server?)", m.url, n)
		}
	}
	return out, nil
}

// cpuSeconds is the server's CPU time so far: from /proc/<pid>/stat with a pid, otherwise the
// process_cpu_seconds_total of its metrics.
func (m *metricsReader) cpuSeconds(ctx context.Context) (float64, error) {
	if m.pid != 0 {
		d, err := processCPU(m.pid)
		return d.Seconds(), err
	}
	v, err := m.read(ctx, "process_cpu_seconds_total")
	if err != nil {
		return 0, err
	}
	return v["process_cpu_seconds_total"], nil
}

// steadySample reads the series every interval until the last n readings of the resident
// memory agree (their spread is at most 1 MiB or 1 %: after a burst, freed memory goes back to
// the operating system over seconds) or maxWait has passed, and returns the median of each series
// over those n readings, their RSS spread, and whether they were steady. With forceGC, every
// reading comes right after a garbage collection the tool asked for.
func (m *metricsReader) steadySample(ctx context.Context, n int, interval, maxWait time.Duration, forceGC bool, names ...string) (med map[string]float64, spread float64, steady bool, err error) {
	const rss = "process_resident_memory_bytes"
	var window []map[string]float64
	deadline := time.Now().Add(maxWait)
	for {
		if len(window) > 0 {
			select {
			case <-ctx.Done():
				return nil, 0, false, ctx.Err()
			case <-time.After(interval):
			}
		}
		if forceGC {
			if err := m.gc(ctx); err != nil {
				return nil, 0, false, err
			}
		}
		v, err := m.read(ctx, append(names, rss)...)
		if err != nil {
			return nil, 0, false, err
		}
		window = append(window, v)
		if len(window) > n {
			window = window[1:]
		}
		if len(window) < n {
			continue
		}
		med = make(map[string]float64, len(names))
		for _, name := range append(names, rss) {
			xs := make([]float64, len(window))
			for i, w := range window {
				xs[i] = w[name]
			}
			slices.Sort(xs)
			if name == rss {
				spread = xs[len(xs)-1] - xs[0]
			}
			if len(xs)%2 == 1 {
				med[name] = xs[len(xs)/2]
			} else {
				med[name] = (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
			}
		}
		steady = spread <= max(1<<20, 0.01*med[rss])
		if steady || time.Now().After(deadline) {
			return med, spread, steady, nil
		}
	}
}

// processCPU is the user + system CPU time a process has used so far.
func processCPU(pid int) (time.Duration, error) { return proc.CPU(pid) }

// profileCPU writes the server's CPU profile over the next d to file (its pprof endpoint, next to
// the metrics, served with metrics.pprof on).
func (m *metricsReader) profileCPU(ctx context.Context, d time.Duration, file string) error {
	pu, err := url.Parse(m.url)
	if err != nil {
		return err
	}
	u := pu.Scheme + "://" + pu.Host + "/debug/pprof/profile?seconds=" + strconv.Itoa(max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: d + 30*time.Second, Transport: &http.Transport{Proxy: nil, DisableCompression: true}}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: HTTP %d (is metrics.pprof on? HS_METRICS_PPROF=true)", u, resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return err
	}
	return os.WriteFile(file, data, 0o644)
}
