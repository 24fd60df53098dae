package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// The examples of the appendices' "Canonical JSON" section, except the last one (see
// TestCanonicalRejects: room versions 6+ reject the exponent it contains).
var specCanonicalExamples = []struct{ in, want string }{
	{`{}`, `{}`},
	{`{
    "one": 1,
    "two": "Two"
}`, `{"one":1,"two":"Two"}`},
	{`{
    "b": "2",
    "a": "1"
}`, `{"a":"1","b":"2"}`},
	{`{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
	{`{
    "auth": {
        "success": true,
        "mxid": "@john.doe:example.com",
        "profile": {
            "display_name": "John Doe",
            "three_pids": [
                {
                    "medium": "email",
                    "address": "john.doe@example.org"
                },
                {
                    "medium": "msisdn",
                    "address": "123456789"
                }
            ]
        }
    }
}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
	{`{
    "a": "日本語"
}`, `{"a":"日本語"}`},
	{`{
    "本": 2,
    "日": 1
}`, `{"日":1,"本":2}`},
	{`{
    "a": "\u65E5"
}`, `{"a":"日"}`},
	{`{
    "a": null
}`, `{"a":null}`},
}

func TestCanonicalSpecExamples(t *testing.T) {
	for _, tc := range specCanonicalExamples {
		got, err := Canonical([]byte(tc.in))
		if err != nil {
			t.Errorf("Canonical(%s): %v", tc.in, err)
			continue
		}
		if string(got) != tc.want {
			t.Errorf("Canonical(%s)\n got %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestCanonical(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"negative zero is zero", `{"a":-0}`, `{"a":0}`},
		{"max int", `[9007199254740991]`, `[9007199254740991]`},
		{"min int", `[-9007199254740991]`, `[-9007199254740991]`},
		{"short escapes", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
		{"long forms to short", `"\u0008\u000C\u000a\u000D\u0009\u0022\u005c"`, `"\b\f\n\r\t\"\\"`},
		{"other controls lowercase hex", `"\u0000\u0001\u001F\u000B\u000e"`, `"\u0000\u0001\u001f\u000b\u000e"`},
		{"solidus unescaped", `"\/a/"`, `"/a/"`},
		{"DEL is not escaped", "\"\x7f\"", "\"\x7f\""},
		{"html escapes undone", `"\u003c\u003e\u0026"`, `"<>&"`},
		{"line separators raw", `"\u2028\u2029"`, "\"\u2028\u2029\""},
		{"surrogate pair", `"\ud83d\ude00"`, `"😀"`},
		{"raw astral", `"😀"`, `"😀"`},
		{"keys by code point not UTF-16", `{"\uff61":1,"😀":2}`, `{"｡":1,"😀":2}`},
		{"escaped keys sort by value", `{"b":1,"\u0061":2,"\n":3}`, `{"\n":3,"a":2,"b":1}`},
		{"nested sorting", `{"z":{"y":[{"b":1,"a":2}],"x":{}},"a":[]}`, `{"a":[],"z":{"x":{},"y":[{"a":2,"b":1}]}}`},
		{"whitespace everywhere", " \t\r\n{ \"a\" : [ 1 , true , false , null ] } \n", `{"a":[1,true,false,null]}`},
		{"scalars", `"x"`, `"x"`},
		{"empty containers", `[{},[],""]`, `[{},[],""]`},
		{"prefix keys", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Canonical([]byte(tc.in))
			if err != nil {
				t.Fatalf("Canonical(%q): %v", tc.in, err)
			}
			if string(got) != tc.want {
				t.Fatalf("Canonical(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			again, err := Canonical(got)
			if err != nil || !bytes.Equal(again, got) {
				t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
			}
		})
	}
}

func TestCanonicalRejects(t *testing.T) {
	for _, tc := range []struct{ name, in string }{
		{"spec example with exponent", `{"a": -0, "b": 1e10}`},
		{"float", `{"a":1.5}`},
		{"integral float", `{"a":1.0}`},
		{"exponent", `[1E2]`},
		{"2^53", `[9007199254740992]`},
		{"-2^53", `[-9007199254740992]`},
		{"huge", `[123456789012345678901234567890]`},
		{"leading zero", `[01]`},
		{"negative leading zero", `[-01]`},
		{"bare minus", `[-]`},
		{"plus sign", `[+1]`},
		{"duplicate keys adjacent", `{"a":1,"a":2}`},
		{"duplicate keys apart", `{"a":1,"b":2,"a":3}`},
		{"duplicate keys unsorted", `{"b":1,"a":2,"b":3}`},
		{"duplicate keys via escape", `{"a":1,"\u0061":2}`},
		{"invalid UTF-8", "{\"a\":\"\xff\"}"},
		{"truncated UTF-8", "\"\xe6\x97\""},
		{"overlong UTF-8", "\"\xc0\xaf\""},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\""},
		{"invalid UTF-8 key", "{\"\xff\":1}"},
		{"lone high surrogate", `"\ud800"`},
		{"lone high surrogate then text", `"\ud800abcdef"`},
		{"lone low surrogate", `"\udc00"`},
		{"reversed pair", `"\udc00\ud800"`},
		{"raw control character", "\"a\x01\""},
		{"raw newline", "\"a\nb\""},
		{"bad escape", `"\x"`},
		{"short unicode escape", `"\u12"`},
		{"NaN", `[NaN]`},
		{"single quotes", `{'a':1}`},
		{"trailing comma object", `{"a":1,}`},
		{"trailing comma array", `[1,]`},
		{"trailing data", `{} {}`},
		{"empty", ``},
		{"only whitespace", "  "},
		{"unterminated string", `"abc`},
		{"unterminated object", `{"a":1`},
		{"unterminated array", `[1,2`},
		{"missing colon", `{"a" 1}`},
		{"non-string key", `{1:2}`},
		{"bad literal", `[tru]`},
		{"BOM", "\xef\xbb\xbf{}"},
		{"too deep arrays", strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1)},
		{"too deep objects", strings.Repeat(`{"a":`, MaxDepth+1) + "1" + strings.Repeat("}", MaxDepth+1)},
		{"very deep", strings.Repeat("[", 1_000_000)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := Canonical([]byte(tc.in))
			if err == nil {
				t.Fatalf("Canonical(%.60q) = %q, want an error", tc.in, out)
			}
			if !errors.Is(err, ErrBadJSON) {
				t.Fatalf("error %v does not match ErrBadJSON", err)
			}
		})
	}
}

func TestCanonicalDepthLimit(t *testing.T) {
	in := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	if _, err := Canonical([]byte(in)); err != nil {
		t.Fatalf("nesting of exactly MaxDepth rejected: %v", err)
	}
}

func TestCanonicalValue(t *testing.T) {
	got, err := CanonicalValue(map[string]any{"b": "<&>", "a": []int{1, 2}, "c": 3.0})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":[1,2],"b":"<&>","c":3}`; string(got) != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	if _, err := CanonicalValue(map[string]any{"f": 0.5}); !errors.Is(err, ErrBadJSON) {
		t.Fatalf("float value: err = %v, want ErrBadJSON", err)
	}
	if _, err := CanonicalValue(int64(1 << 60)); !errors.Is(err, ErrBadJSON) {
		t.Fatalf("big int: err = %v, want ErrBadJSON", err)
	}
}

// TestCanonicalMatchesEncodingJSON checks on a realistic event that the output decodes to the
// same value as the input.
func TestCanonicalMatchesEncodingJSON(t *testing.T) {
	in := typicalEvent()
	out, err := Canonical(in)
	if err != nil {
		t.Fatal(err)
	}
	if !sameJSON(t, in, out) {
		t.Fatalf("canonical form decodes differently:\n%s\n%s", in, out)
	}
}

// sameJSON reports whether a and b decode to equal values (numbers compared as text, with -0
// and 0 equal).
func sameJSON(t testing.TB, a, b []byte) bool {
	t.Helper()
	va, vb := decodeNumbers(t, a), decodeNumbers(t, b)
	ja, _ := json.Marshal(va)
	jb, _ := json.Marshal(vb)
	return bytes.Equal(ja, jb)
}

func decodeNumbers(t testing.TB, data []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", data, err)
	}
	return normaliseZero(v)
}

func normaliseZero(v any) any {
	switch x := v.(type) {
	case json.Number:
		if x == "-0" {
			return json.Number("0")
		}
	case []any:
		for i := range x {
			x[i] = normaliseZero(x[i])
		}
	case map[string]any:
		for k := range x {
			x[k] = normaliseZero(x[k])
		}
	}
	return v
}
