package bus_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hearthmx/homeserver/homeserver/bus"
)

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// checkFor calls fn every interval until it returns nil, failing the test if it still errs after
// total.
func checkFor(t *testing.T, total, interval time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(total)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %v", total, err)
		}
		time.Sleep(interval)
	}
}

func start(t *testing.T, o bus.Options) *bus.Bus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := bus.Start(ctx, o, discardLog())
	if err != nil {
		t.Fatalf("bus.Start: %v", err)
	}
	t.Cleanup(b.Close)
	return b
}

// runNATSServer starts a standalone NATS server with JetStream on a random loopback port and returns
// its client URL.
func runNATSServer(t *testing.T) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(),
		NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not become ready")
	}
	return ns.ClientURL()
}

// roundTrip subscribes on one bus, publishes on another (or the same) and waits for the message.
func roundTrip(t *testing.T, sub, pub *bus.Bus, subject string) {
	t.Helper()
	got := make(chan []byte, 16)
	s, err := sub.Subscribe(subject, func(data []byte) { got <- data })
	if err != nil {
		t.Fatal(err)
	}
	defer s.Unsubscribe()
	if err := sub.Conn.Flush(); err != nil { // the server has the subscription before we publish
		t.Fatal(err)
	}
	want := fmt.Sprintf("hello %d", time.Now().UnixNano())
	if err := pub.Publish(subject, []byte(want)); err != nil {
		t.Fatal(err)
	}
	select {
	case data := <-got:
		if string(data) != want {
			t.Fatalf("received %q, want %q", data, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("published message not received")
	}
}

// checkUserEventsStream checks that the durable stream exists and stores what is published on it.
func checkUserEventsStream(t *testing.T, b *bus.Bus) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.JS.Stream(ctx, bus.StreamUserEvents)
	if err != nil {
		t.Fatalf("stream %s: %v", bus.StreamUserEvents, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Storage != jetstream.FileStorage || len(info.Config.Subjects) == 0 {
		t.Fatalf("stream config = %+v", info.Config)
	}
	before := info.State.Msgs
	ack, err := b.JS.Publish(ctx, "hs.user.test", []byte("x"))
	if err != nil {
		t.Fatalf("JetStream publish: %v", err)
	}
	if ack.Stream != bus.StreamUserEvents {
		t.Fatalf("message stored in stream %q, want %q", ack.Stream, bus.StreamUserEvents)
	}
	checkFor(t, 5*time.Second, 10*time.Millisecond, func() error {
		info, err := st.Info(ctx)
		if err != nil {
			return err
		}
		if info.State.Msgs != before+1 {
			return fmt.Errorf("stream has %d messages, want %d", info.State.Msgs, before+1)
		}
		return nil
	})
}

func TestEmbedded(t *testing.T) {
	dir := t.TempDir()
	b := start(t, bus.Options{StoreDir: dir, Name: "test-embedded"})
	if !b.Embedded() {
		t.Fatal("Embedded() = false with no URLs")
	}
	roundTrip(t, b, b, bus.SubjectDeviceChange)
	checkUserEventsStream(t, b)

	// JetStream data lives in StoreDir: a restarted embedded bus still has the message.
	b.Close()
	b2 := start(t, bus.Options{StoreDir: dir, Name: "test-embedded"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b2.JS.Stream(ctx, bus.StreamUserEvents)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("after restart the stream has %d messages, want 1", info.State.Msgs)
	}
}

func TestExternal(t *testing.T) {
	url := runNATSServer(t)
	node1 := start(t, bus.Options{URLs: []string{url}, Name: "node1"})
	node2 := start(t, bus.Options{URLs: []string{url}, Name: "node2"}) // the stream already exists
	if node1.Embedded() || node2.Embedded() {
		t.Fatal("Embedded() = true with URLs")
	}
	roundTrip(t, node1, node1, bus.SubjectTokenRevoked)
	// Nodes sharing the cluster hear each other.
	roundTrip(t, node1, node2, bus.SubjectAccountData)
	roundTrip(t, node2, node1, bus.SubjectAccountData)
	checkUserEventsStream(t, node1)
	checkUserEventsStream(t, node2)
}

func TestExternalBadURL(t *testing.T) {
	// A listener that accepts connections but never speaks NATS.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	// A port nothing listens on.
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "nats://" + closed.Addr().String()
	closed.Close()

	for _, url := range []string{refused, "nats://" + silent.Addr().String(), "://not a url"} {
		t.Run(url, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			done := make(chan error, 1)
			go func() {
				b, err := bus.Start(ctx, bus.Options{URLs: []string{url}, Name: "bad"}, discardLog())
				if err == nil {
					b.Close()
					err = errors.New("no error")
				} else if b != nil {
					err = errors.New("returned a bus along with the error")
				} else {
					err = nil
				}
				done <- err
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("Start with %s: %v", url, err)
				}
			case <-time.After(15 * time.Second):
				t.Fatalf("Start with %s hung", url)
			}
		})
	}
}
