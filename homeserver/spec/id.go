package spec

import (
	"fmt"
	"strings"
)

// UserID is a fully qualified Matrix user ID, @localpart:server_name.
type UserID string

// NewUserID joins a localpart and a server name.
func NewUserID(localpart, serverName string) UserID {
	return UserID("@" + localpart + ":" + serverName)
}

// ParseUserID checks the grammar of a user ID (appendix "User Identifiers"). Historical localparts
// (any printable ASCII but ':') are accepted, as other servers may still have them.
func ParseUserID(s string) (UserID, error) {
	if len(s) > 255 {
		return "", fmt.Errorf("user ID longer than 255 bytes")
	}
	if !strings.HasPrefix(s, "@") {
		return "", fmt.Errorf("user ID must start with @")
	}
	local, server, ok := strings.Cut(s[1:], ":")
	if !ok || local == "" {
		return "", fmt.Errorf("user ID must be @localpart:server_name")
	}
	for i := 0; i < len(local); i++ {
		if c := local[i]; c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("user ID localpart has a character outside printable ASCII")
		}
	}
	if err := ValidServerName(server); err != nil {
		return "", err
	}
	return UserID(s), nil
}

// Localpart is the part between @ and the first colon.
func (u UserID) Localpart() string {
	local, _, _ := strings.Cut(strings.TrimPrefix(string(u), "@"), ":")
	return local
}

// ServerName is the part after the first colon.
func (u UserID) ServerName() string {
	_, server, _ := strings.Cut(string(u), ":")
	return server
}

func (u UserID) String() string { return string(u) }

// ValidLocalpart reports whether a localpart may be used for a NEW user: the spec's current grammar
// a-z, 0-9, and . _ = - / +.
func ValidLocalpart(local string) bool {
	if local == "" {
		return false
	}
	for i := 0; i < len(local); i++ {
		c := local[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '.', c == '_', c == '=', c == '-', c == '/', c == '+':
		default:
			return false
		}
	}
	return true
}

// ValidServerName checks the server name grammar: a DNS name, IPv4 literal or [IPv6] literal with an
// optional port.
func ValidServerName(s string) error {
	if s == "" || len(s) > 255 {
		return fmt.Errorf("server name must be 1 to 255 characters")
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return fmt.Errorf("server name has an unterminated IPv6 literal")
		}
		host, port = s[:end+1], strings.TrimPrefix(s[end+1:], ":")
		if end+1 < len(s) && s[end+1] != ':' {
			return fmt.Errorf("server name has junk after the IPv6 literal")
		}
		if n := len(host) - 2; n < 2 || n > 45 { // IPv6address = 2*45IPv6char
			return fmt.Errorf("server name has an invalid IPv6 literal")
		}
		for _, c := range host[1 : len(host)-1] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' || c == ':' || c == '.') {
				return fmt.Errorf("server name has an invalid IPv6 literal")
			}
		}
	} else if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
	}
	if !strings.HasPrefix(host, "[") {
		if host == "" {
			return fmt.Errorf("server name has an empty host")
		}
		for _, c := range host {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
				return fmt.Errorf("server name host has an invalid character %q", c)
			}
		}
	}
	if port != "" || strings.HasSuffix(s, ":") {
		if port == "" || len(port) > 5 {
			return fmt.Errorf("server name has an invalid port")
		}
		for _, c := range port {
			if c < '0' || c > '9' {
				return fmt.Errorf("server name has an invalid port")
			}
		}
	}
	return nil
}
