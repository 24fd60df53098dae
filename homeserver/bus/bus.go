// Package bus is the message bus between the homeserver's components and nodes: NATS with
// JetStream. By default an embedded NATS server runs in-process (no network listener) with its
// JetStream data under the data directory; with URLs configured, the node joins an external
// cluster instead and several nodes share it.
//
// Every subject and stream name lives in subjects.go.
package bus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Options configure the bus.
type Options struct {
	// URLs of an external cluster; empty starts the embedded server.
	URLs []string
	// StoreDir holds the embedded server's JetStream data.
	StoreDir string
	// Name identifies this node's connection.
	Name string
}

// Bus is a connection to NATS, and the embedded server when there is one.
type Bus struct {
	Conn     *nats.Conn
	JS       jetstream.JetStream
	embedded *server.Server
	log      *slog.Logger

	mu          sync.Mutex
	onReconnect []func()
}

// Start connects to the bus, starting the embedded server if no URLs are given.
func Start(ctx context.Context, o Options, log *slog.Logger) (*Bus, error) {
	b := &Bus{log: log}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("bus disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("bus reconnected", "url", c.ConnectedUrl())
			b.reconnected()
		}),
	}
	var url string
	if len(o.URLs) == 0 {
		ns, err := server.NewServer(&server.Options{
			ServerName: o.Name,
			DontListen: true,
			JetStream:  true,
			StoreDir:   o.StoreDir,
			NoSigs:     true,
			NoLog:      true,
		})
		if err != nil {
			return nil, fmt.Errorf("bus: embedded NATS: %w", err)
		}
		ns.Start()
		if !ns.ReadyForConnections(30 * time.Second) {
			ns.Shutdown()
			return nil, errors.New("bus: embedded NATS did not start within 30s")
		}
		b.embedded = ns
		opts = append(opts, nats.InProcessServer(ns))
	} else {
		for i, u := range o.URLs {
			if i > 0 {
				url += ","
			}
			url += u
		}
		opts = append(opts, nats.RetryOnFailedConnect(false))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		b.shutdownEmbedded()
		return nil, fmt.Errorf("bus: connect: %w", err)
	}
	b.Conn = nc
	js, err := jetstream.New(nc)
	if err != nil {
		b.Close()
		return nil, fmt.Errorf("bus: jetstream: %w", err)
	}
	b.JS = js
	if err := b.ensureStreams(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

// OnReconnect registers fn to run after the connection to NATS came back: core messages sent while
// it was down are lost, so caches kept coherent by them start over.
func (b *Bus) OnReconnect(fn func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onReconnect = append(b.onReconnect, fn)
}

func (b *Bus) reconnected() {
	b.mu.Lock()
	fns := append([]func(){}, b.onReconnect...)
	b.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

// Embedded reports whether this node runs the NATS server itself.
func (b *Bus) Embedded() bool { return b.embedded != nil }

// Close drains the connection and stops the embedded server.
func (b *Bus) Close() {
	if b.Conn != nil {
		_ = b.Conn.Drain()
		b.Conn.Close()
	}
	b.shutdownEmbedded()
}

func (b *Bus) shutdownEmbedded() {
	if b.embedded != nil {
		b.embedded.Shutdown()
		b.embedded.WaitForShutdown()
	}
}

// Publish sends a core NATS message (fire and forget: wake-ups, invalidations).
func (b *Bus) Publish(subject string, data []byte) error { return b.Conn.Publish(subject, data) }

// Subscribe receives core NATS messages on subject until the subscription is drained.
func (b *Bus) Subscribe(subject string, fn func(data []byte)) (*nats.Subscription, error) {
	return b.Conn.Subscribe(subject, func(m *nats.Msg) { fn(m.Data) })
}

// ensureStreams creates or updates the JetStream streams this version uses.
func (b *Bus) ensureStreams(ctx context.Context) error {
	for _, cfg := range streams {
		if _, err := b.JS.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("bus: stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}
