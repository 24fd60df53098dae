package storage_test

import (
	"context"
	"strings"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/storage/storagetest"
)

// TestRelationQueriesUseIndex guards the SQLite plan of the relation lookups, which run for every
// event served: they must use the partial index events_relates, not scan the events table.
func TestRelationQueriesUseIndex(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	plans, err := s.ExplainRelationQueries(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for name, plan := range plans {
		if !strings.Contains(plan, "events_relates") || strings.Contains(plan, "SCAN events") {
			t.Errorf("%s does not use events_relates:\n%s", name, plan)
		}
	}
}

// TestMembershipChangesUseIndex: the sync notifier's read after every write batch must visit only
// member events (the partial index events_member_stream), not every event of the range.
func TestMembershipChangesUseIndex(t *testing.T) {
	s := storagetest.Open(t, "sqlite")
	plan, err := s.ExplainMembershipChanges(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(plan, "events_member_stream") {
		t.Errorf("MembershipChangesBetween does not use events_member_stream:\n%s", plan)
	}
}
