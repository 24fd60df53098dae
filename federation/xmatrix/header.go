// Package xmatrix signs and verifies server-server requests with the X-Matrix Authorization scheme
// (server-server API, "Request Authentication"): the origin signs a JSON object holding the
// request's method, target URI, origin, destination and JSON body, and sends the signature in
// "Authorization: X-Matrix origin=...,destination=...,key=...,sig=...".
package xmatrix

import (
	"errors"
	"strings"
)

// Header is the content of one X-Matrix Authorization header.
type Header struct {
	Origin string
	// Destination is empty when the sender left it out (servers older than spec v1.3).
	Destination string
	Key         string // key ID, e.g. ed25519:abc
	Sig         string // unpadded base64
}

// ErrMalformed is matched by every error Parse returns.
var ErrMalformed = errors.New("malformed X-Matrix Authorization header")

func malformed(why string) error { return &parseError{why} }

type parseError struct{ why string }

func (e *parseError) Error() string   { return ErrMalformed.Error() + ": " + e.why }
func (e *parseError) Is(t error) bool { return t == ErrMalformed }

const scheme = "X-Matrix"

// String formats the header the way the spec asks senders to: one space after the scheme,
// lower-case names, quoted values, no spaces around the commas.
func (h Header) String() string {
	var b strings.Builder
	b.WriteString(scheme)
	b.WriteByte(' ')
	sep := ""
	for _, p := range [...]struct{ name, val string }{
		{"origin", h.Origin}, {"destination", h.Destination}, {"key", h.Key}, {"sig", h.Sig},
	} {
		if p.val == "" && p.name == "destination" {
			continue
		}
		b.WriteString(sep)
		b.WriteString(p.name)
		b.WriteString(`="`)
		for i := 0; i < len(p.val); i++ {
			if c := p.val[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(p.val[i])
		}
		b.WriteByte('"')
		sep = ","
	}
	return b.String()
}

// Parse reads an Authorization header value of the X-Matrix scheme. It accepts what RFC 9110
// section 11.4 allows (the scheme in any case followed by one or more spaces, parameters in any
// order separated by commas with optional spaces and tabs around them, case-insensitive names,
// quoted values with backslash escapes, unquoted token values) and, for older servers, unquoted
// values with colons and other characters that are not token characters (IPv6 server names,
// base64 signatures). Unknown parameters are ignored; a repeated parameter is an error, as are a
// missing origin, key or sig.
func Parse(s string) (Header, error) {
	if len(s) <= len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) || (s[len(scheme)] != ' ' && s[len(scheme)] != '\t') {
		return Header{}, malformed("not the X-Matrix scheme")
	}
	p := &paramParser{s: s, i: len(scheme)}
	p.skipSpace()
	var h Header
	seen := map[string]bool{}
	for {
		p.skipSpace()
		if p.i < len(p.s) && p.s[p.i] == ',' { // empty list elements are allowed
			p.i++
			continue
		}
		if p.i == len(p.s) {
			break
		}
		name, val, err := p.param()
		if err != nil {
			return Header{}, err
		}
		name = strings.ToLower(name)
		if seen[name] {
			return Header{}, malformed("parameter " + name + " given twice")
		}
		seen[name] = true
		switch name {
		case "origin":
			h.Origin = val
		case "destination":
			h.Destination = val
		case "key":
			h.Key = val
		case "sig":
			h.Sig = val
		}
		p.skipSpace()
		if p.i < len(p.s) {
			if p.s[p.i] != ',' {
				return Header{}, malformed("expected a comma after parameter " + name)
			}
			p.i++
		}
	}
	switch {
	case h.Origin == "":
		return Header{}, malformed("no origin")
	case h.Key == "":
		return Header{}, malformed("no key")
	case h.Sig == "":
		return Header{}, malformed("no sig")
	}
	return h, nil
}

type paramParser struct {
	s string
	i int
}

func (p *paramParser) skipSpace() {
	for p.i < len(p.s) && (p.s[p.i] == ' ' || p.s[p.i] == '\t') {
		p.i++
	}
}

// param reads name BWS "=" BWS value.
func (p *paramParser) param() (name, val string, err error) {
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", "", malformed("expected a parameter name")
	}
	name = p.s[start:p.i]
	p.skipSpace()
	if p.i == len(p.s) || p.s[p.i] != '=' {
		return "", "", malformed("parameter " + name + " has no value")
	}
	p.i++
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '"' {
		val, err = p.quoted()
		return name, val, err
	}
	start = p.i
	for p.i < len(p.s) && isBareValueChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", "", malformed("parameter " + name + " has an empty value")
	}
	return name, p.s[start:p.i], nil
}

// quoted reads a quoted-string, unescaping backslash pairs.
func (p *paramParser) quoted() (string, error) {
	p.i++ // opening quote
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c == '\\':
			if p.i+1 == len(p.s) {
				return "", malformed("backslash at the end of a quoted value")
			}
			b.WriteByte(p.s[p.i+1])
			p.i += 2
		case c < 0x20 && c != '\t' || c == 0x7f:
			return "", malformed("control character in a quoted value")
		default:
			b.WriteByte(c)
			p.i++
		}
	}
	return "", malformed("unterminated quoted value")
}

// isTokenChar reports whether c is a tchar of RFC 9110 section 5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isBareValueChar is what an unquoted value may hold: token characters and, as older servers send
// them unquoted, the other visible characters except the delimiters that end a value.
func isBareValueChar(c byte) bool {
	return c > 0x20 && c < 0x7f && c != ',' && c != '"' && c != '\\'
}
