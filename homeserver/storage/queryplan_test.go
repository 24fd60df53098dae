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
