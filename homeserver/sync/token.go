package sync

import (
	"strconv"
	"strings"

	"github.com/hearthmx/homeserver/homeserver/spec"
)

// Token is a position in every stream /sync reads: a next_batch names, per stream, the last
// position the client has. Each part is a position of a storage stream counter, which commits in
// order (the counter row stays locked until its transaction commits), so "every change at or
// below the position" is a set that never grows after the token was handed out.
//
// Text form: "s" then the parts in a fixed order, joined by "_":
//
//	s<events>_<account_data>
//
// New streams (to-device, receipts, typing, presence, device lists) are appended as further parts.
// A token with fewer parts reads the missing ones as 0 (an older server's token: the client gets
// those streams from the start); parts beyond the ones known are ignored. "s<events>" alone is the
// room package's stream token (/messages accepts our tokens and we accept its).
type Token struct {
	Events      int64
	AccountData int64
}

// String is the token's text form.
func (t Token) String() string {
	b := make([]byte, 0, 24)
	b = append(b, 's')
	b = strconv.AppendInt(b, t.Events, 10)
	b = append(b, '_')
	b = strconv.AppendInt(b, t.AccountData, 10)
	return string(b)
}

// after reports whether any part of t is ahead of u.
func (t Token) after(u Token) bool { return t.Events > u.Events || t.AccountData > u.AccountData }

// ParseToken reads a token's text form; anything else is M_INVALID_PARAM.
func ParseToken(s string) (Token, error) {
	bad := spec.ErrInvalidParam.With("Invalid sync token")
	if len(s) < 2 || s[0] != 's' || len(s) > 200 {
		return Token{}, bad
	}
	parts := strings.Split(s[1:], "_")
	var pos [2]int64
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil || n < 0 || p != strconv.FormatInt(n, 10) {
			return Token{}, bad
		}
		if i < len(pos) {
			pos[i] = n
		}
	}
	return Token{Events: pos[0], AccountData: pos[1]}, nil
}
