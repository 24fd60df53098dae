package room

import (
	"slices"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage"
)

// TestSpaceChildOrder is the example of the spec's "Ordering of children within a space", with
// invalid order values that count as absent.
func TestSpaceChildOrder(t *testing.T) {
	child := func(id string, ts int64, content string) storage.Event {
		return storage.Event{Type: TypeSpaceChild, StateKey: &id, OriginServerTS: ts, ClientJSON: []byte(`{"content":` + content + `}`)}
	}
	sum := &summary{PublicRoom: PublicRoom{RoomType: RoomTypeSpace}, children: []storage.Event{
		child("!e:example.org", 1640641000000, `{"via":["example.org"]}`),
		child("!a:example.org", 1640141000000, `{"order":"aaaa","via":["example.org"]}`),
		child("!d:example.org", 1640741000000, `{"via":["example.org"],"suggested":true}`),
		child("!c:example.org", 1640841000000, `{"order":"first","via":["example.org"]}`),
		child("!b:example.org", 1640341000000, `{"order":" ","via":["example.org"]}`),
		child("!g:example.org", 1640741000000, `{"order":"\u00e9","via":["example.org"]}`), // not ASCII: no order
		child("!f:example.org", 1640741000000, `{"order":5,"via":["example.org"]}`),        // not a string: no order
	}}
	var got []string
	for _, ev := range sum.orderedChildren(false) {
		got = append(got, *ev.StateKey)
	}
	want := []string{"!b:example.org", "!a:example.org", "!c:example.org", "!e:example.org", "!d:example.org", "!f:example.org", "!g:example.org"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
	if s := sum.orderedChildren(true); len(s) != 1 || *s[0].StateKey != "!d:example.org" {
		t.Fatalf("suggested only: %v", s)
	}
	sum.RoomType = ""
	if len(sum.orderedChildren(false)) != 0 {
		t.Fatal("a room that is not a space has children")
	}
	for content, valid := range map[string]bool{`{"via":["a"]}`: true, `{"via":[]}`: false, `{}`: false, `{"via":"a"}`: false, `{"via":[1]}`: false} {
		if got := validSpaceChild(contentOf(child("!x:y", 0, content))); got != valid {
			t.Errorf("validSpaceChild(%s) = %v", content, got)
		}
	}
}
