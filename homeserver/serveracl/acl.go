// Package serveracl evaluates a room's server access control list (the m.room.server_acl state
// event, client-server API "Server Access Control Lists (ACLs) for rooms"): which servers may
// take part in the room over federation.
package serveracl

import (
	"encoding/json"
	"net/netip"
	"strings"
)

// ACL is the compiled content of an m.room.server_acl event. The zero value denies every server
// (no allow entries), as the content {} does.
type ACL struct {
	allowIPLiterals bool
	allow, deny     []glob
}

// Parse compiles an m.room.server_acl content leniently, as the event's schema says: a missing or
// non-boolean allow_ip_literals is true; a missing or non-array allow or deny is empty (an empty
// allow denies every server, the sender's own included); entries that are not strings are
// ignored. Content that is not a JSON object is treated as {}. Parse never fails: an ACL the room
// holds applies whatever its shape.
func Parse(content []byte) *ACL {
	var c map[string]json.RawMessage
	if json.Unmarshal(content, &c) != nil {
		c = nil
	}
	acl := &ACL{allowIPLiterals: true, allow: globs(c["allow"]), deny: globs(c["deny"])}
	var b bool
	if raw, ok := c["allow_ip_literals"]; ok && json.Unmarshal(raw, &b) == nil {
		acl.allowIPLiterals = b
	}
	return acl
}

// globs compiles the string entries of a JSON array (anything else: none).
func globs(raw json.RawMessage) []glob {
	var entries []json.RawMessage
	if json.Unmarshal(raw, &entries) != nil {
		return nil
	}
	out := make([]glob, 0, len(entries))
	for _, e := range entries {
		var s string
		if json.Unmarshal(e, &s) == nil {
			out = append(out, compile(s))
		}
	}
	return out
}

// Allows reports whether server (a server name, with or without a port) may take part in the
// room, following the order of the spec: an IP literal when allow_ip_literals is false is
// denied; then a match in deny denies; then a match in allow allows; anything else is denied.
// The port is not considered and matching is case-insensitive. A nil ACL (the room has no
// m.room.server_acl) allows every server.
func (a *ACL) Allows(server string) bool {
	if a == nil {
		return true
	}
	host := strings.ToLower(Host(server))
	if !a.allowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, g := range a.deny {
		if g.match(host) {
			return false
		}
	}
	for _, g := range a.allow {
		if g.match(host) {
			return true
		}
	}
	return false
}

// Host is a server name without its port: "example.org:8448" -> "example.org",
// "[::1]:8448" -> "[::1]", "1.2.3.4" -> "1.2.3.4".
func Host(server string) string {
	if strings.HasPrefix(server, "[") {
		if i := strings.IndexByte(server, ']'); i >= 0 {
			return server[:i+1]
		}
		return server
	}
	if i := strings.LastIndexByte(server, ':'); i >= 0 {
		return server[:i]
	}
	return server
}

// isIPLiteral reports whether a host (no port) is an IPv4 address or a bracketed IPv6 address.
func isIPLiteral(host string) bool {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		return err == nil && addr.Is6()
	}
	_, err := netip.ParseAddr(host)
	return err == nil
}
