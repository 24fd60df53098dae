package servertest

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/hearthmx/homeserver/homeserver/room"
)

// JoinMembers joins n users of serverName (@member00000:serverName, ...) to a room through the
// room service, from 32 goroutines so that the writer commits them in batches (benchmarks of big
// rooms). The users need no accounts.
func JoinMembers(tb testing.TB, svc *room.Service, roomID, serverName string, n int) {
	tb.Helper()
	const workers = 32
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				local := fmt.Sprintf("member%05d", i)
				from := room.Sender{UserID: "@" + local + ":" + serverName, Localpart: local}
				if _, err := svc.Join(context.Background(), roomID, from, room.MemberProfile{DisplayName: "Member " + local}, ""); err != nil {
					errs <- fmt.Errorf("%s joins: %w", from.UserID, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}
