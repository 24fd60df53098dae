package event

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode/utf8"
)

// Canonical JSON (appendices, "Canonical JSON"; enforced strictly from room version 6): object
// keys sorted by Unicode code point, no insignificant whitespace, the shortest string escapes,
// and only integers in [-(2^53)+1, (2^53)-1].
//
// The canonicaliser below is a single-pass recursive-descent parser that writes its output while
// it reads. Objects are written in input order and only reordered when their keys turn out not
// to be sorted, so already-canonical input (the usual case: everything we produce, and most
// federation traffic) is copied without any sorting work.

// MaxDepth is how deeply arrays and objects may nest in canonical JSON we accept. Deeper input is
// rejected rather than risking unbounded recursion. serde_json (Conduit, tuwunel) stops at 128
// as well; no real event nests anywhere near that.
const MaxDepth = 128

// Largest integer canonical JSON allows: 2^53 - 1.
const maxSafeInt = 1<<53 - 1

// ErrBadJSON is matched (errors.Is) by every error for input that is not acceptable as canonical
// JSON: malformed JSON, floats, out-of-range integers, duplicate keys, invalid UTF-8, lone
// surrogates, nesting deeper than MaxDepth. The client API maps it to M_BAD_JSON.
var ErrBadJSON = errors.New("invalid canonical JSON")

// jsonError describes where and why input was rejected.
type jsonError struct {
	off int
	msg string
}

func (e *jsonError) Error() string {
	return fmt.Sprintf("invalid canonical JSON: %s at offset %d", e.msg, e.off)
}

func (e *jsonError) Is(target error) bool { return target == ErrBadJSON }

// Canonical returns the canonical JSON encoding of data, or an error matching ErrBadJSON.
func Canonical(data []byte) ([]byte, error) {
	return AppendCanonical(make([]byte, 0, len(data)), data)
}

// AppendCanonical appends the canonical JSON encoding of data to dst, which must not overlap
// data. On error dst is returned unchanged (its spare capacity may have been written to).
func AppendCanonical(dst, data []byte) ([]byte, error) {
	c := canonPool.Get().(*canonicaliser)
	c.in, c.pos, c.out, c.depth = data, 0, dst, 0
	err := c.value()
	if err == nil {
		c.skipSpace()
		if c.pos != len(c.in) {
			err = c.fail("trailing data after the JSON value")
		}
	}
	out := c.out
	c.release()
	if err != nil {
		return dst, err
	}
	return out, nil
}

// CanonicalValue marshals v with encoding/json and returns its canonical form. Float values that
// are not integers, and integers out of range, are errors.
func CanonicalValue(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return Canonical(raw)
}

// canonicaliser holds the state of one run. Instances are pooled so that the scratch slices
// (member spans, decoded keys, the reorder buffer) are reused between calls.
type canonicaliser struct {
	in    []byte
	pos   int
	out   []byte
	depth int
	spans []memberSpan // members of the objects being parsed, innermost last
	keys  []byte       // decoded keys of those members, for comparison
	tmp   []byte       // scratch for reordering an unsorted object
}

// memberSpan locates one `"key":value` member in out and its decoded key in keys.
type memberSpan struct {
	start, end   int
	kStart, kEnd int
}

var canonPool = sync.Pool{New: func() any { return new(canonicaliser) }}

func (c *canonicaliser) release() {
	c.in, c.out = nil, nil
	c.spans, c.keys = c.spans[:0], c.keys[:0]
	if cap(c.tmp) > 64<<10 { // don't let one huge input pin memory in the pool
		c.tmp = nil
	}
	if cap(c.keys) > 64<<10 {
		c.keys = nil
	}
	if cap(c.spans) > 4096 {
		c.spans = nil
	}
	canonPool.Put(c)
}

func (c *canonicaliser) fail(msg string) error { return &jsonError{off: c.pos, msg: msg} }

func (c *canonicaliser) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicaliser) value() error {
	c.skipSpace()
	if c.pos >= len(c.in) {
		return c.fail("unexpected end of input")
	}
	switch b := c.in[c.pos]; {
	case b == '{':
		return c.object()
	case b == '[':
		return c.array()
	case b == '"':
		return c.str(false)
	case b == 't':
		return c.literal("true")
	case b == 'f':
		return c.literal("false")
	case b == 'n':
		return c.literal("null")
	case b == '-' || (b >= '0' && b <= '9'):
		return c.number()
	default:
		return c.fail(fmt.Sprintf("unexpected character %q", b))
	}
}

func (c *canonicaliser) literal(lit string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(lit)) {
		return c.fail("invalid literal")
	}
	c.pos += len(lit)
	c.out = append(c.out, lit...)
	return nil
}

func (c *canonicaliser) enter() error {
	c.depth++
	if c.depth > MaxDepth {
		return c.fail(fmt.Sprintf("nesting deeper than %d", MaxDepth))
	}
	return nil
}

func (c *canonicaliser) array() error {
	if err := c.enter(); err != nil {
		return err
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		c.depth--
		return nil
	}
	for {
		if err := c.value(); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.fail("unterminated array")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			c.depth--
			return nil
		default:
			return c.fail("expected ',' or ']' in array")
		}
	}
}

func (c *canonicaliser) object() error {
	if err := c.enter(); err != nil {
		return err
	}
	c.pos++ // '{'
	objStart := len(c.out)
	c.out = append(c.out, '{')
	base, keyBase := len(c.spans), len(c.keys)
	sorted := true
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		c.depth--
		return nil
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.fail("expected a string key")
		}
		start, kStart := len(c.out), len(c.keys)
		if err := c.str(true); err != nil {
			return err
		}
		kEnd := len(c.keys)
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.fail("expected ':' after object key")
		}
		c.pos++
		c.out = append(c.out, ':')
		if err := c.value(); err != nil {
			return err
		}
		// Nested objects have truncated spans and keys back to where they started, so the
		// previous member of this object is the last span.
		if n := len(c.spans); n > base {
			prev := c.spans[n-1]
			switch bytes.Compare(c.keys[prev.kStart:prev.kEnd], c.keys[kStart:kEnd]) {
			case 0:
				return c.fail("duplicate object key")
			case 1:
				sorted = false
			}
		}
		c.spans = append(c.spans, memberSpan{start: start, end: len(c.out), kStart: kStart, kEnd: kEnd})
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.fail("unterminated object")
		}
		if c.in[c.pos] == ',' {
			c.pos++
			c.out = append(c.out, ',')
			continue
		}
		if c.in[c.pos] != '}' {
			return c.fail("expected ',' or '}' in object")
		}
		c.pos++
		break
	}
	if !sorted {
		if err := c.reorder(objStart, base); err != nil {
			return err
		}
	}
	c.out = append(c.out, '}')
	c.spans, c.keys = c.spans[:base], c.keys[:keyBase]
	c.depth--
	return nil
}

// reorder rewrites the members of the object starting at out[objStart] in key order. Keys are
// compared decoded, as UTF-8 bytes, which is the same as comparing by Unicode code point.
func (c *canonicaliser) reorder(objStart, base int) error {
	members, keys := c.spans[base:], c.keys
	slices.SortFunc(members, func(a, b memberSpan) int {
		return bytes.Compare(keys[a.kStart:a.kEnd], keys[b.kStart:b.kEnd])
	})
	for i := 1; i < len(members); i++ {
		if bytes.Equal(keys[members[i-1].kStart:members[i-1].kEnd], keys[members[i].kStart:members[i].kEnd]) {
			return c.fail("duplicate object key")
		}
	}
	body := objStart + 1
	c.tmp = append(c.tmp[:0], c.out[body:]...)
	c.out = c.out[:body]
	for i, m := range members {
		if i > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.tmp[m.start-body:m.end-body]...)
	}
	return nil
}

// number accepts only integers in the canonical range; "-0" is written as "0".
func (c *canonicaliser) number() error {
	start := c.pos
	if c.in[c.pos] == '-' {
		c.pos++
	}
	digits := c.pos
	switch {
	case c.pos >= len(c.in):
		return c.fail("invalid number")
	case c.in[c.pos] == '0':
		c.pos++
		if c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			return c.fail("number with a leading zero")
		}
	case c.in[c.pos] >= '1' && c.in[c.pos] <= '9':
		for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			c.pos++
		}
	default:
		return c.fail("invalid number")
	}
	if c.pos < len(c.in) {
		switch c.in[c.pos] {
		case '.', 'e', 'E':
			return c.fail("non-integer number (floats and exponents are not allowed)")
		}
	}
	n := c.pos - digits
	if n > 16 {
		return c.fail("integer out of range")
	}
	if n == 16 {
		var v uint64
		for _, d := range c.in[digits:c.pos] {
			v = v*10 + uint64(d-'0')
		}
		if v > maxSafeInt {
			return c.fail("integer out of range")
		}
	}
	if n == 1 && c.in[digits] == '0' {
		c.out = append(c.out, '0') // "-0" and "0"
		return nil
	}
	c.out = append(c.out, c.in[start:c.pos]...)
	return nil
}

// plain marks bytes a string may contain that are copied unchanged: everything except control
// characters, '"' and '\'. Bytes >= 0x80 are plain too; runs containing them are checked with
// utf8.Valid, which also rejects encoded surrogates and overlong forms.
var plain = func() (t [256]bool) {
	for i := 0x20; i < 256; i++ {
		t[i] = true
	}
	t['"'], t['\\'] = false, false
	return t
}()

// scanPlain returns the end of the run of plain bytes starting at in[i], and whether the run
// has bytes >= 0x80. It tests eight bytes at a time: a word is all plain when none of its bytes
// is below 0x20, '"' or '\\'.
func scanPlain(in []byte, i int) (int, bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	var acc uint64
	for ; i+8 <= len(in); i += 8 {
		x := binary.LittleEndian.Uint64(in[i:])
		q := x ^ (ones * '"')
		bs := x ^ (ones * '\\')
		special := ((x - ones*0x20) | (q - ones) | (bs - ones)) &^ x & highs
		// The subtractions are exact only for bytes < 0x80; bytes >= 0x80 are plain anyway, and
		// &^ x clears their lanes.
		if special != 0 {
			break
		}
		acc |= x
	}
	high := acc&highs != 0
	for ; i < len(in); i++ {
		b := in[i]
		if !plain[b] {
			break
		}
		if b >= 0x80 {
			high = true
		}
	}
	return i, high
}

// str parses the string at c.pos, appends its canonical form to out and, for object keys, its
// decoded bytes to keys.
func (c *canonicaliser) str(key bool) error {
	c.pos++ // opening quote
	c.out = append(c.out, '"')
	for {
		start := c.pos
		end, high := scanPlain(c.in, start)
		c.pos = end
		if run := c.in[start:end]; len(run) > 0 {
			if high && !utf8.Valid(run) {
				c.pos = start
				return c.fail("invalid UTF-8 in string")
			}
			c.out = append(c.out, run...)
			if key {
				c.keys = append(c.keys, run...)
			}
		}
		if c.pos >= len(c.in) {
			return c.fail("unterminated string")
		}
		switch b := c.in[c.pos]; b {
		case '"':
			c.pos++
			c.out = append(c.out, '"')
			return nil
		case '\\':
			r, err := c.escape()
			if err != nil {
				return err
			}
			c.out = appendEscapedRune(c.out, r)
			if key {
				c.keys = utf8.AppendRune(c.keys, r)
			}
		default:
			return c.fail("unescaped control character in string")
		}
	}
}

// escape decodes the escape sequence at c.pos (which holds the backslash).
func (c *canonicaliser) escape() (rune, error) {
	c.pos++
	if c.pos >= len(c.in) {
		return 0, c.fail("unterminated escape")
	}
	e := c.in[c.pos]
	c.pos++
	switch e {
	case '"', '\\', '/':
		return rune(e), nil
	case 'b':
		return '\b', nil
	case 'f':
		return '\f', nil
	case 'n':
		return '\n', nil
	case 'r':
		return '\r', nil
	case 't':
		return '\t', nil
	case 'u':
	default:
		c.pos -= 2
		return 0, c.fail("invalid escape")
	}
	r, ok := hex4(c.in[c.pos:])
	if !ok {
		return 0, c.fail("invalid \\u escape")
	}
	c.pos += 4
	switch {
	case r >= 0xDC00 && r < 0xE000:
		return 0, c.fail("lone low surrogate")
	case r >= 0xD800 && r < 0xDC00:
		rest := c.in[c.pos:]
		if len(rest) < 6 || rest[0] != '\\' || rest[1] != 'u' {
			return 0, c.fail("lone high surrogate")
		}
		lo, ok := hex4(rest[2:])
		if !ok || lo < 0xDC00 || lo >= 0xE000 {
			return 0, c.fail("lone high surrogate")
		}
		c.pos += 6
		return 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00), nil
	}
	return r, nil
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, h := range b[:4] {
		switch {
		case h >= '0' && h <= '9':
			h -= '0'
		case h >= 'a' && h <= 'f':
			h -= 'a' - 10
		case h >= 'A' && h <= 'F':
			h -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(h)
	}
	return r, true
}

const hexDigits = "0123456789abcdef"

// appendEscapedRune appends r as it appears inside a canonical JSON string.
func appendEscapedRune(dst []byte, r rune) []byte {
	switch r {
	case '"':
		return append(dst, '\\', '"')
	case '\\':
		return append(dst, '\\', '\\')
	case '\b':
		return append(dst, '\\', 'b')
	case '\f':
		return append(dst, '\\', 'f')
	case '\n':
		return append(dst, '\\', 'n')
	case '\r':
		return append(dst, '\\', 'r')
	case '\t':
		return append(dst, '\\', 't')
	}
	if r < 0x20 {
		return append(dst, '\\', 'u', '0', '0', hexDigits[r>>4], hexDigits[r&0xf])
	}
	return utf8.AppendRune(dst, r)
}

// appendQuoted appends s as a canonical JSON string. s must be valid UTF-8 (callers check
// input they did not produce themselves).
func appendQuoted[S string | []byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		if b := s[i]; b < 0x20 || b == '"' || b == '\\' {
			dst = append(dst, s[start:i]...)
			dst = appendEscapedRune(dst, rune(b))
			start = i + 1
		}
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
