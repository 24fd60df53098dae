// Command loadtest measures a homeserver's send path over HTTP against a bare net/http JSON
// handler on the same machine, in the same run, with the same client.
//
//	go run ./cmd/loadtest -base http://127.0.0.1:8008 -senders 20 -duration 10s
//
// It registers one user per sender (open registration), creates a public room they all join,
// then every sender PUTs m.room.message events as fast as the server answers. The baseline is a
// handler that decodes the same JSON body and answers {"event_id": ...}, served on loopback by
// this process. It prints requests per second and latency percentiles of both, and their ratio.
// With -pid (the server's process ID, on Linux), it also prints the CPU time the server spent
// during the send phase, per request: unlike the rate, that figure holds on a busy machine.
//
// The two are measured in turns (-rounds, each a slice of -duration for each) so that a change of
// the machine's speed during the run (a virtual machine's neighbours) weighs on both alike; the
// ratio printed is that of the totals, with each round's ratio beside it.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hearthmx/homeserver/cmd/internal/proc"
)

func main() {
	base := flag.String("base", "http://127.0.0.1:8008", "homeserver base URL (empty: baseline only)")
	senders := flag.Int("senders", 20, "concurrent senders")
	duration := flag.Duration("duration", 10*time.Second, "how long each measurement runs")
	baseline := flag.Bool("baseline", true, "also measure the bare net/http baseline")
	pid := flag.Int("pid", 0, "the server's process ID: report its CPU time per request (Linux /proc)")
	rounds := flag.Int("rounds", 5, "measure the baseline and the homeserver in this many alternating turns")
	flag.Parse()
	if err := run(*base, *senders, *duration, max(1, *rounds), *baseline, *pid); err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

// result of one measurement.
type result struct {
	requests int64
	errors   int64
	elapsed  time.Duration
	lat      []time.Duration
}

func (r result) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (r result) pct(p float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	sort.Slice(r.lat, func(i, j int) bool { return r.lat[i] < r.lat[j] })
	return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
}

func (r result) String() string {
	return fmt.Sprintf("%8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  errors %d", r.rate(),
		float64(r.pct(0.50).Microseconds())/1000, float64(r.pct(0.99).Microseconds())/1000, r.errors)
}

var client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 1024}}

// add merges another measurement into r.
func (r *result) add(o result) {
	r.requests += o.requests
	r.errors += o.errors
	r.elapsed += o.elapsed
	r.lat = append(r.lat, o.lat...)
}

func run(base string, senders int, d time.Duration, rounds int, baseline bool, pid int) error {
	slice := d / time.Duration(rounds)
	var bare string
	if baseline {
		url, stop, err := startBaseline()
		if err != nil {
			return err
		}
		defer stop()
		bare = url
	}
	measureBare := func() result {
		return measure(senders, slice, func(i int, n int64) (*http.Request, error) {
			return http.NewRequest("PUT", fmt.Sprintf("%s/send/%d/%d", bare, i, n), bytes.NewReader(messageBody(n)))
		})
	}
	if base == "" {
		if baseline {
			var r result
			for range rounds {
				r.add(measureBare())
			}
			fmt.Printf("bare net/http JSON handler: %s\n", r)
		}
		return nil
	}
	tokens, roomID, err := setup(base, senders)
	if err != nil {
		return err
	}
	var bareRes, hsRes result
	var cpu time.Duration
	var io0, io1 map[string]int64
	var ratios []string
	for round := range rounds {
		var b result
		if baseline {
			b = measureBare()
			bareRes.add(b)
		}
		cpu0, err := processCPU(pid)
		if err != nil {
			return err
		}
		if round == 0 {
			io0 = processIO(pid)
		}
		h := measure(senders, slice, func(i int, n int64) (*http.Request, error) {
			// Transaction IDs unique across rounds: a repeat would be answered without a new event.
			req, err := http.NewRequest("PUT", fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/lt%d-%d-%d", base, roomID, round, i, n),
				bytes.NewReader(messageBody(n)))
			if err == nil {
				req.Header.Set("Authorization", "Bearer "+tokens[i])
			}
			return req, err
		})
		cpu1, err := processCPU(pid)
		if err != nil {
			return err
		}
		cpu += cpu1 - cpu0
		io1 = processIO(pid) // the write counters are summed over the baseline turns too: few
		hsRes.add(h)
		if baseline && b.rate() > 0 {
			ratios = append(ratios, fmt.Sprintf("%.1f", 100*h.rate()/b.rate()))
		}
	}
	if baseline {
		fmt.Printf("bare net/http JSON handler: %s\n", bareRes)
	}
	fmt.Printf("homeserver send path:       %s\n", hsRes)
	if pid != 0 && hsRes.requests > 0 {
		fmt.Printf("server CPU: %.2f s in %.1f s (%.2f cores), %.0f µs per request\n", cpu.Seconds(), hsRes.elapsed.Seconds(),
			cpu.Seconds()/hsRes.elapsed.Seconds(), float64(cpu.Microseconds())/float64(hsRes.requests))
		if io0 != nil && io1 != nil {
			// Bytes the server handed to write system calls (database pages, WAL, sockets) and how
			// many such calls.
			fmt.Printf("server writes: %.0f bytes and %.1f write calls per request\n",
				float64(io1["wchar"]-io0["wchar"])/float64(hsRes.requests), float64(io1["syscw"]-io0["syscw"])/float64(hsRes.requests))
		}
	}
	if baseline {
		fmt.Printf("ratio: %.1f %% of the bare rate (%d senders, %s in %d turns each; per turn: %s)\n",
			100*hsRes.rate()/bareRes.rate(), senders, d, rounds, strings.Join(ratios, " "))
	}
	return nil
}

// processCPU is the user + system CPU time a process has used so far.
func processCPU(pid int) (time.Duration, error) { return proc.CPU(pid) }

// processIO reads the counters of /proc/<pid>/io (nil if unreadable: not Linux, or not our user).
func processIO(pid int) map[string]int64 {
	if pid == 0 {
		return nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return nil
	}
	out := map[string]int64{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ": "); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			out[k] = n
		}
	}
	return out
}

func messageBody(n int64) []byte {
	return []byte(`{"msgtype":"m.text","body":"load test message ` + strconv.FormatInt(n, 10) + `"}`)
}

// measure runs senders goroutines that each send requests back to back for d.
func measure(senders int, d time.Duration, newReq func(sender int, n int64) (*http.Request, error)) result {
	var count, errs atomic.Int64
	lats := make([][]time.Duration, senders)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < senders; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := int64(0); ctx.Err() == nil; n++ {
				req, err := newReq(i, n)
				if err != nil {
					errs.Add(1)
					return
				}
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
					continue
				}
				lats[i] = append(lats[i], time.Since(t0))
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	r := result{requests: count.Load(), errors: errs.Load(), elapsed: time.Since(start)}
	for _, l := range lats {
		r.lat = append(r.lat, l...)
	}
	return r
}

// startBaseline serves a bare JSON handler on a loopback port: decode the body, answer an ID.
func startBaseline() (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	var n atomic.Int64
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			http.Error(w, `{"errcode":"M_NOT_JSON"}`, 400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"event_id": "$" + strconv.FormatInt(n.Add(1), 10)})
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { srv.Close() }, nil
}

// setup registers senders users, creates a public room and joins them all.
func setup(base string, senders int) ([]string, string, error) {
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	tokens := make([]string, senders)
	for i := range tokens {
		tok, err := register(base, fmt.Sprintf("load%s_%d", stamp, i))
		if err != nil {
			return nil, "", err
		}
		tokens[i] = tok
	}
	var created struct {
		RoomID string `json:"room_id"`
	}
	if err := call(base, "POST", "/_matrix/client/v3/createRoom", tokens[0], map[string]any{"preset": "public_chat"}, &created); err != nil {
		return nil, "", err
	}
	for _, tok := range tokens[1:] {
		if err := call(base, "POST", "/_matrix/client/v3/rooms/"+created.RoomID+"/join", tok, map[string]any{}, nil); err != nil {
			return nil, "", err
		}
	}
	return tokens, created.RoomID, nil
}

func register(base, user string) (string, error) {
	body := map[string]any{"username": user, "password": "load test password"}
	var challenge struct {
		Session string `json:"session"`
	}
	_ = call(base, "POST", "/_matrix/client/v3/register", "", body, &challenge)
	body["auth"] = map[string]any{"type": "m.login.dummy", "session": challenge.Session}
	var res struct {
		AccessToken string `json:"access_token"`
	}
	if err := call(base, "POST", "/_matrix/client/v3/register", "", body, &res); err != nil {
		return "", fmt.Errorf("register %s (is open registration on and rate limiting off?): %w", user, err)
	}
	return res.AccessToken, nil
}

func call(base, method, path, token string, body, out any) error {
	data, _ := json.Marshal(body)
	req, err := http.NewRequest(method, base+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(raw, out)
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return nil
}
