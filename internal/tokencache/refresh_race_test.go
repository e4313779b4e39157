package tokencache

import (
	"context"
	"testing"
	"time"
)

// TestRefreshDoesNotMintWhatAnotherRefreshReplaced: the periodic Refresh
// finds a token due, and before its flight starts, a refresh a reader
// started replaces the token. Refresh must see that inside its flight and
// mint nothing: each mint is an IMS call, and Adobe throttles integrations
// that mint too many.
func TestRefreshDoesNotMintWhatAnotherRefreshReplaced(t *testing.T) {
	c, ims, clock := newTestCache(t, time.Hour)
	ctx := context.Background()
	first, err := c.Get(ctx, []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(41 * time.Minute) // past the refresh point

	landed := false
	c.testHookBeforeRefreshFlight = func(key string) {
		e := (*c.entries.Load())[key]
		c.refreshInBackground(key, e)
		waitFor(t, func() bool { return e.token.Load() != first.Token && !e.refreshing.Load() })
		landed = true
	}
	if _, err := c.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if !landed {
		t.Fatal("Refresh found nothing due: the race this test stages never happened")
	}
	if got := ims.calls.Load(); got != 2 {
		t.Fatalf("%d mints, want 2: Refresh minted again what the reader's refresh had just replaced", got)
	}
}
