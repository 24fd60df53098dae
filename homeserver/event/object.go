package event

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf8"
)

// Reading and editing JSON that is already canonical (the output of Canonical): no whitespace,
// strings escaped only as canonical JSON escapes them. Hashing, redaction and signing work on
// these bytes directly instead of decoding into maps and encoding again; because members of a
// canonical object are already sorted, dropping members keeps the result canonical and adding
// one only means finding its place.

var errCorrupt = errors.New("event: malformed canonical JSON (internal)")

// skipString returns the index just past the string whose opening quote is at b[i].
func skipString(b []byte, i int) (int, error) {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, errCorrupt
		}
		i += j
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for k := i - 1; k >= 0 && b[k] == '\\'; k-- {
			n++
		}
		i++
		if n%2 == 0 {
			return i, nil
		}
	}
}

// skipValue returns the index just past the value that starts at b[i].
func skipValue(b []byte, i int) (int, error) {
	if i >= len(b) {
		return 0, errCorrupt
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				j, err := skipString(b, i)
				if err != nil {
					return 0, err
				}
				i = j
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
			i++
		}
		return 0, errCorrupt
	default:
		j := i
		for j < len(b) && b[j] != ',' && b[j] != '}' && b[j] != ']' {
			j++
		}
		if j == i {
			return 0, errCorrupt
		}
		return j, nil
	}
}

// members iterates over the members of a canonical object:
//
//	it := members(obj)
//	for it.next() { use it.key, it.val }
//	if it.err != nil { ... }
type memberIter struct {
	b     []byte
	i     int
	start int    // index of the member's opening key quote
	key   []byte // the key as it appears between the quotes (canonically escaped)
	val   []byte // the raw value
	err   error
}

func members(obj []byte) memberIter {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return memberIter{err: errNotObject}
	}
	return memberIter{b: obj, i: 1}
}

var errNotObject = errors.New("not a JSON object")

func (it *memberIter) next() bool {
	if it.err != nil || it.i >= len(it.b)-1 {
		return false
	}
	b := it.b
	if it.i > 1 {
		if b[it.i] != ',' {
			it.err = errCorrupt
			return false
		}
		it.i++
	}
	if b[it.i] != '"' {
		it.err = errCorrupt
		return false
	}
	kEnd, err := skipString(b, it.i)
	if err != nil || kEnd >= len(b) || b[kEnd] != ':' {
		it.err = errCorrupt
		return false
	}
	vEnd, err := skipValue(b, kEnd+1)
	if err != nil || vEnd > len(b)-1 {
		it.err = errCorrupt
		return false
	}
	it.start, it.key, it.val = it.i, b[it.i+1:kEnd-1], b[kEnd+1:vEnd]
	it.i = vEnd
	return true
}

// member returns the raw value of key in the canonical object obj.
func member(obj []byte, key string) ([]byte, bool) {
	it := members(obj)
	for it.next() {
		if string(it.key) == key || (bytes.IndexByte(it.key, '\\') >= 0 && compareKey(it.key, key) == 0) {
			return it.val, true
		}
	}
	return nil, false
}

// decodeKey decodes a canonically escaped object key.
func decodeKey(raw []byte) string {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	out, _ := unescape(make([]byte, 0, len(raw)), raw)
	return string(out)
}

// stringMember returns the decoded string value of key, if it is present and a string.
func stringMember(obj []byte, key string) (string, bool) {
	v, ok := member(obj, key)
	if !ok {
		return "", false
	}
	return unquote(v)
}

// unquote decodes a canonical JSON string (with its quotes). It reports false for anything that
// is not a string.
func unquote(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return "", false
	}
	body := v[1 : len(v)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		return string(body), true
	}
	out, ok := unescape(make([]byte, 0, len(body)), body)
	return string(out), ok
}

// unescape appends the decoded form of a string body (between its quotes) to dst.
func unescape(dst, body []byte) ([]byte, bool) {
	for i := 0; i < len(body); i++ {
		b := body[i]
		if b != '\\' {
			dst = append(dst, b)
			continue
		}
		if i+1 >= len(body) {
			return dst, false
		}
		i++
		switch body[i] {
		case '"', '\\', '/':
			dst = append(dst, body[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(body[i+1:])
			if !ok {
				return dst, false
			}
			i += 4
			// Canonical JSON only uses \u for control characters; anything else here came from
			// JSON we did not canonicalise, so decode surrogate pairs too.
			if r >= 0xD800 && r < 0xDC00 && i+6 < len(body) && body[i+1] == '\\' && body[i+2] == 'u' {
				if lo, ok := hex4(body[i+3:]); ok && lo >= 0xDC00 && lo < 0xE000 {
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
					i += 6
				}
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, false
		}
	}
	return dst, true
}

// intValue decodes a canonical JSON integer.
func intValue(v []byte) (int64, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false
	}
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}

// compareKey compares a canonically escaped key with a decoded one, by code point.
func compareKey(raw []byte, key string) int {
	if bytes.IndexByte(raw, '\\') >= 0 {
		dec, _ := unescape(make([]byte, 0, len(raw)), raw)
		raw = dec
	}
	n := min(len(raw), len(key))
	for i := 0; i < n; i++ {
		if raw[i] != key[i] {
			if raw[i] < key[i] {
				return -1
			}
			return 1
		}
	}
	switch {
	case len(raw) < len(key):
		return -1
	case len(raw) > len(key):
		return 1
	}
	return 0
}

// edit replaces (or adds) key with the canonical JSON val, or removes key when val is nil.
type edit struct {
	key string
	val []byte
}

// appendEdited appends obj with edits applied to dst. obj must be a canonical object and edits
// sorted by key; the result is canonical.
func appendEdited(dst, obj []byte, edits ...edit) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	put := func(e edit) {
		if e.val == nil {
			return
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = appendQuoted(dst, e.key)
		dst = append(dst, ':')
		dst = append(dst, e.val...)
	}
	it := members(obj)
	for it.next() {
		for len(edits) > 0 && compareKey(it.key, edits[0].key) > 0 {
			put(edits[0])
			edits = edits[1:]
		}
		if len(edits) > 0 && compareKey(it.key, edits[0].key) == 0 {
			put(edits[0])
			edits = edits[1:]
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, it.b[it.start:it.i]...)
	}
	if it.err != nil {
		return dst, it.err
	}
	for _, e := range edits {
		put(e)
	}
	return append(dst, '}'), nil
}

// appendWithout appends obj to dst without the members named in drop (compared with the
// canonically escaped key; fine for the plain ASCII names used here).
func appendWithout(dst, obj []byte, drop ...string) ([]byte, error) {
	dst = append(dst, '{')
	first := true
	it := members(obj)
next:
	for it.next() {
		for _, d := range drop {
			if string(it.key) == d {
				continue next
			}
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		dst = append(dst, it.b[it.start:it.i]...)
	}
	if it.err != nil {
		return dst, it.err
	}
	return append(dst, '}'), nil
}
