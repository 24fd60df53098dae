package storage

import (
	"context"
	"errors"
	"strings"
)

// explainSQLite returns SQLite's plan of a query (EXPLAIN QUERY PLAN), one step per line, for
// tests that keep hot queries on their indexes.
func (s *Store) explainSQLite(ctx context.Context, query string, args ...any) (string, error) {
	if s.dialect.name() != "sqlite" {
		return "", errors.New("storage: query plans are checked on SQLite only")
	}
	rows, err := s.read.QueryContext(ctx, `EXPLAIN QUERY PLAN `+query, args...)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var plan strings.Builder
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			return "", err
		}
		plan.WriteString(detail + "\n")
	}
	return plan.String(), rows.Err()
}

// ExplainRecentTxnEvents returns SQLite's plan of a read of n rooms in RecentTxnEvents.
func (s *Store) ExplainRecentTxnEvents(ctx context.Context, n int) (string, error) {
	args := make([]any, n+1)
	for i := range n {
		args[i] = "!r:x"
	}
	args[n] = 1
	return s.explainSQLite(ctx, recentTxnEventsQuery(n), args...)
}

// ExplainMembershipChanges returns SQLite's plan of MembershipChangesBetween.
func (s *Store) ExplainMembershipChanges(ctx context.Context) (string, error) {
	return s.explainSQLite(ctx, membershipChangesQuery, 1, 2)
}
