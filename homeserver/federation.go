package homeserver

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/hearthmx/homeserver/federation/cert"
	"github.com/hearthmx/homeserver/homeserver/config"
	"github.com/hearthmx/homeserver/homeserver/event"
	"github.com/hearthmx/homeserver/homeserver/room"
	"github.com/hearthmx/homeserver/homeserver/room/stateres"
	"github.com/hearthmx/homeserver/homeserver/storage"
)

// federationTLS is the TLS configuration of the federation listener: the static certificate of
// federation.tls.cert_file, or a certificate for server_name (and the well_known.server host)
// issued at start from federation.tls.ca_cert_file.
func federationTLS(cfg *config.Config) (*tls.Config, error) {
	t := cfg.Federation.TLS
	var c tls.Certificate
	var err error
	if t.CertFile != "" {
		c, err = cert.Load(t.CertFile, t.KeyFile)
	} else {
		c, err = cert.IssueFromFiles(t.CACertFile, t.CAKeyFile, certificateNames(cfg))
	}
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"}}, nil
}

// certificateNames are the names other servers may verify our certificate against: the host of
// server_name, and that of well_known.server when it delegates elsewhere.
func certificateNames(cfg *config.Config) []string {
	host := func(name string) string {
		if h, _, err := net.SplitHostPort(name); err == nil {
			return h
		}
		return strings.TrimSuffix(strings.TrimPrefix(name, "["), "]")
	}
	names := []string{host(cfg.ServerName)}
	if cfg.WellKnown.Server != "" {
		if h := host(cfg.WellKnown.Server); h != names[0] {
			names = append(names, h)
		}
	}
	return names
}

// listenFederation opens the TLS federation listener when one is configured.
func (s *Server) listenFederation() error {
	addr := s.cfg.FederationListen()
	if addr == "" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s (federation): %w", addr, err)
	}
	s.fed = tls.NewListener(l, s.fedTLS)
	return nil
}

// FederationAddr is the bound address of the TLS federation listener, "" when there is none.
func (s *Server) FederationAddr() string {
	if s.fed == nil {
		return ""
	}
	return s.fed.Addr().String()
}

// resolveState is the room service's state resolution (room.ResolveFunc): package stateres, which
// imports package room and so cannot be called by it directly.
func resolveState(ctx context.Context, v event.Version, states []storage.StateMap,
	fetch func(ctx context.Context, eventID string) (*event.PDU, error), rejected func(eventID string) bool) (storage.StateMap, error) {
	in := make([]stateres.StateMap, len(states))
	for i, st := range states {
		m := make(stateres.StateMap, len(st))
		for k, id := range st {
			m[room.StateKeyTuple(k)] = id
		}
		in[i] = m
	}
	r := stateres.Resolver{Version: v, Fetch: fetch, IsRejected: rejected}
	out, err := r.Resolve(ctx, in)
	if err != nil {
		return nil, err
	}
	res := make(storage.StateMap, len(out))
	for k, id := range out {
		res[storage.StateKey(k)] = id
	}
	return res, nil
}
