package sync

import (
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Token is a position in every stream /sync reads: a next_batch names, per stream, the last
// position the client has. Events, account data and receipts are positions of storage stream
// counters, which commit in order (the counter row stays locked until its transaction commits), so
// "every change at or below the position" is a set that never grows after the token was handed
// out. Typing and presence live in memory on every node; their positions come from a clock of
// wall-clock milliseconds that never goes back on a node (see packages typing and presence).
//
// Text form: "s" then the parts in a fixed order, joined by "_":
//
//	s<events>_<account_data>_<receipts>_<typing>_<presence>_<to_device>_<device_lists>
//
// New streams are appended as further parts. A token with fewer parts
// reads the missing ones as 0 (an older server's token: the client gets those streams from the
// start, which for receipts, typing and presence is their current state); parts beyond the ones
// known are ignored. "s<events>" alone is the room package's stream token (/messages accepts our
// tokens and we accept its).
type Token struct {
	Events      int64
	AccountData int64
	Receipts    int64
	Typing      int64
	Presence    int64
	ToDevice    int64
	DeviceLists int64
}

// parts are the token's positions in text order.
func (t Token) parts() [7]int64 {
	return [7]int64{t.Events, t.AccountData, t.Receipts, t.Typing, t.Presence, t.ToDevice, t.DeviceLists}
}

// String is the token's text form.
func (t Token) String() string {
	b := make([]byte, 0, 64)
	b = append(b, 's')
	for i, p := range t.parts() {
		if i > 0 {
			b = append(b, '_')
		}
		b = strconv.AppendInt(b, p, 10)
	}
	return string(b)
}

// tokenText is t.String(), kept for the last token asked: the receivers woken together for a
// change answer with the same next_batch, which is then made once.
func (s *Service) tokenText(t Token) string {
	if last := s.lastToken.Load(); last != nil && last.t == t {
		return last.text
	}
	text := t.String()
	s.lastToken.Store(&tokenString{t: t, text: text})
	return text
}

// tokenString is a token with its text form.
type tokenString struct {
	t    Token
	text string
}

// after reports whether any database-backed part of t is ahead of u. Typing and presence are left
// out: their clocks are per node, and a node catches up with a token it is shown.
func (t Token) after(u Token) bool {
	return t.Events > u.Events || t.AccountData > u.AccountData || t.Receipts > u.Receipts ||
		t.ToDevice > u.ToDevice || t.DeviceLists > u.DeviceLists
}

// ParseToken reads a token's text form; anything else is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	if len(s) < 2 || s[0] != 's' || len(s) > 200 {
		return Token{}, errBadToken
	}
	var pos [7]int64
	rest := s[1:]
	for i := 0; ; i++ {
		part, tail, more := strings.Cut(rest, "_")
		n, ok := parsePart(part)
		if !ok {
			return Token{}, errBadToken
		}
		if i < len(pos) {
			pos[i] = n
		}
		if !more {
			break
		}
		rest = tail
	}
	return Token{Events: pos[0], AccountData: pos[1], Receipts: pos[2], Typing: pos[3], Presence: pos[4],
		ToDevice: pos[5], DeviceLists: pos[6]}, nil
}

var errBadToken = spec.ErrInvalidParam.With("Invalid sync token")

// parsePart reads one position: decimal digits without a leading zero (the only form String
// writes), within int64.
func parsePart(p string) (int64, bool) {
	if p == "" || len(p) > 1 && p[0] == '0' {
		return 0, false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(p, 10, 64)
	return n, err == nil
}
