package tokencache

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeIMS mints numbered tokens and counts calls; release gates each mint
// when set.
type fakeIMS struct {
	clock    *fakeClock
	lifetime time.Duration
	calls    atomic.Int64
	fail     atomic.Pointer[error]
	release  chan struct{}
}

func (f *fakeIMS) mint(ctx context.Context, scopes []string) (*Token, error) {
	n := f.calls.Add(1)
	if f.release != nil {
		select {
		case <-f.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := f.fail.Load(); err != nil {
		return nil, *err
	}
	now := f.clock.Now()
	return &Token{AccessToken: fmt.Sprintf("token-%d", n), TokenType: "bearer", Scopes: scopes, MintedAt: now, ExpiresAt: now.Add(f.lifetime)}, nil
}

func (f *fakeIMS) failWith(err error) { f.fail.Store(&err) }

func newTestCache(t *testing.T, lifetime time.Duration) (*Cache, *fakeIMS, *fakeClock) {
	t.Helper()
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: lifetime}
	c := New(ims.mint, Options{Now: clock.Now, RetryBackoff: time.Minute, MaxRetryBackoff: 10 * time.Minute})
	t.Cleanup(c.Close)
	return c, ims, clock
}

func TestTokenTimes(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		lifetime            time.Duration
		wantMargin, wantRef time.Duration
	}{
		{24*time.Hour - time.Second, 5 * time.Minute, (24*time.Hour - time.Second) * 2 / 3},
		{20 * time.Second, 2 * time.Second, 20 * time.Second * 2 / 3},
		{time.Hour, 5 * time.Minute, 40 * time.Minute},
	}
	for _, tc := range cases {
		tok := &Token{MintedAt: start, ExpiresAt: start.Add(tc.lifetime)}
		if got := tok.SafetyMargin(); got != tc.wantMargin {
			t.Errorf("lifetime %s: margin %s, want %s", tc.lifetime, got, tc.wantMargin)
		}
		if got := tok.SafeEnd(); !got.Equal(start.Add(tc.lifetime - tc.wantMargin)) {
			t.Errorf("lifetime %s: safe end %s", tc.lifetime, got)
		}
		if got := tok.RefreshAt().Sub(start); got != tc.wantRef {
			t.Errorf("lifetime %s: refresh after %s, want %s", tc.lifetime, got, tc.wantRef)
		}
	}
}

func TestKeyIgnoresOrder(t *testing.T) {
	if a, b := Key([]string{"b", "a", "c"}), Key([]string{"c", "b", "a"}); a != b || a != "a,b,c" {
		t.Fatalf("keys %q and %q, want both a,b,c", a, b)
	}
}

func TestReuseUntilRefreshPoint(t *testing.T) {
	c, ims, clock := newTestCache(t, 24*time.Hour)
	ctx := context.Background()

	first, err := c.Get(ctx, []string{"b", "a"})
	if err != nil || first.Hit {
		t.Fatalf("cold get: %+v, %v; want a miss without error", first, err)
	}
	clock.Advance(15 * time.Hour)
	second, err := c.Get(ctx, []string{"a", "b"})
	if err != nil || !second.Hit || second.Token.AccessToken != first.Token.AccessToken {
		t.Fatalf("warm get = %+v, %v; want a hit on the first token", second, err)
	}
	if n := ims.calls.Load(); n != 1 {
		t.Fatalf("IMS calls = %d, want 1", n)
	}
}

func TestPastRefreshPointServesOldTokenAndReplacesInBackground(t *testing.T) {
	c, ims, clock := newTestCache(t, 24*time.Hour)
	ctx := context.Background()
	first, _ := c.Get(ctx, []string{"a"})

	ims.release = make(chan struct{})
	clock.Advance(17 * time.Hour) // past 2/3 of 24h
	got, err := c.Get(ctx, []string{"a"})
	if err != nil || !got.Hit || got.Token.AccessToken != first.Token.AccessToken {
		t.Fatalf("get past refresh point = %+v, %v; want the old token at once", got, err)
	}
	close(ims.release)
	waitFor(t, func() bool {
		r, _ := c.Get(ctx, []string{"a"})
		return r.Token.AccessToken != first.Token.AccessToken
	})
	if n := ims.calls.Load(); n != 2 {
		t.Fatalf("IMS calls = %d, want 2", n)
	}
}

func TestPastSafeEndWaitsForNewToken(t *testing.T) {
	c, ims, clock := newTestCache(t, time.Hour)
	ctx := context.Background()
	first, _ := c.Get(ctx, []string{"a"})
	clock.Advance(56 * time.Minute) // safe end is at 55 minutes
	got, err := c.Get(ctx, []string{"a"})
	if err != nil || got.Hit || got.Token.AccessToken == first.Token.AccessToken {
		t.Fatalf("get past safe end = %+v, %v; want a new token, minted while waiting", got, err)
	}
	if n := ims.calls.Load(); n != 2 {
		t.Fatalf("IMS calls = %d, want 2", n)
	}
}

func TestConcurrentColdReadsMakeOneRequest(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ims.release = make(chan struct{})
	const readers = 200
	var wg sync.WaitGroup
	tokens := make([]string, readers)
	errs := make([]error, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := c.Get(context.Background(), []string{"x", "y"})
			errs[i] = err
			if err == nil {
				tokens[i] = r.Token.AccessToken
			}
		}()
	}
	waitFor(t, func() bool { return ims.calls.Load() == 1 })
	close(ims.release)
	wg.Wait()
	for i := range readers {
		if errs[i] != nil || tokens[i] != "token-1" {
			t.Fatalf("reader %d got %q, %v; want token-1", i, tokens[i], errs[i])
		}
	}
	if n := ims.calls.Load(); n != 1 {
		t.Fatalf("IMS calls = %d, want 1", n)
	}
}

func TestFailedMintCachesNothing(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ims.failWith(errors.New("ims down"))
	if _, err := c.Get(context.Background(), []string{"a"}); err == nil || !strings.Contains(err.Error(), "ims down") {
		t.Fatalf("get with IMS down: err = %v", err)
	}
	ims.fail.Store(nil)
	r, err := c.Get(context.Background(), []string{"a"})
	if err != nil || r.Hit {
		t.Fatalf("get after recovery = %+v, %v; want a fresh mint", r, err)
	}
	if n := ims.calls.Load(); n != 2 {
		t.Fatalf("IMS calls = %d, want 2", n)
	}
}

func TestPurgeDropsTokensAndInFlightMints(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ctx := context.Background()
	c.Get(ctx, []string{"a"})
	c.Purge()
	if len(c.States()) != 0 {
		t.Fatalf("states after purge: %+v", c.States())
	}

	// A mint that started before a purge does not land in the cache.
	ims.release = make(chan struct{})
	done := make(chan struct{})
	go func() { defer close(done); c.Get(ctx, []string{"a"}) }()
	waitFor(t, func() bool { return ims.calls.Load() == 2 })
	c.Purge()
	close(ims.release)
	<-done
	r, err := c.Get(ctx, []string{"a"})
	if err != nil || r.Hit || r.Token.AccessToken != "token-3" {
		t.Fatalf("get after purge during a mint = %+v, %v; want a new token-3", r, err)
	}
}

func TestDropForgetsOneScopeSet(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ctx := context.Background()
	c.Get(ctx, []string{"a"})
	c.Get(ctx, []string{"b"})
	c.Drop([]string{"a"})
	if r, _ := c.Get(ctx, []string{"b"}); !r.Hit {
		t.Fatal("dropping a must keep b")
	}
	if r, _ := c.Get(ctx, []string{"a"}); r.Hit {
		t.Fatal("a was dropped; want a miss")
	}
	if n := ims.calls.Load(); n != 3 {
		t.Fatalf("IMS calls = %d, want 3", n)
	}
}

func TestRefreshReplacesUsedTokensAndBacksOff(t *testing.T) {
	c, ims, clock := newTestCache(t, 24*time.Hour)
	ctx := context.Background()
	c.Get(ctx, []string{"used"})
	c.Put(&Token{AccessToken: "unused", Scopes: []string{"unused"}, MintedAt: clock.Now(), ExpiresAt: clock.Now().Add(24 * time.Hour)})

	if n, err := c.Refresh(ctx); n != 0 || err != nil {
		t.Fatalf("refresh before refresh point = %d, %v; want 0, nil", n, err)
	}
	clock.Advance(17 * time.Hour)
	ims.failWith(errors.New("ims down"))
	if n, err := c.Refresh(ctx); n != 0 || err == nil {
		t.Fatalf("refresh with IMS down = %d, %v; want 0 and an error", n, err)
	}
	if s := c.States(); s[1].LastError == "" || !s[1].NextAttempt.After(clock.Now()) {
		t.Fatalf("state after a failed refresh: %+v", s[1])
	}
	// Backing off: no new attempt before NextAttempt.
	calls := ims.calls.Load()
	c.Refresh(ctx)
	if ims.calls.Load() != calls {
		t.Fatal("refresh retried during its back-off")
	}
	// The old token is still served meanwhile.
	if r, err := c.Get(ctx, []string{"used"}); err != nil || r.Token.AccessToken != "token-1" {
		t.Fatalf("get during outage = %+v, %v; want token-1", r, err)
	}

	ims.fail.Store(nil)
	clock.Advance(time.Minute)
	if n, err := c.Refresh(ctx); n != 1 || err != nil {
		t.Fatalf("refresh after recovery = %d, %v; want 1 (the unused token is left to expire)", n, err)
	}
	if s := c.States(); s[1].LastError != "" {
		t.Fatalf("error not cleared after success: %+v", s[1])
	}
}

func TestCancelledReaderDoesNotFailOthers(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ims.release = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Get(ctx, []string{"a"}); errc <- err }()
	waitFor(t, func() bool { return ims.calls.Load() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled reader err = %v", err)
	}
	other := make(chan Result, 1)
	go func() { r, _ := c.Get(context.Background(), []string{"a"}); other <- r }()
	close(ims.release)
	if r := <-other; r.Token == nil || r.Token.AccessToken != "token-1" {
		t.Fatalf("second reader = %+v, want the shared token-1", r)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// fakeTimers records scheduled calls so a test fires them at will.
type fakeTimers struct {
	mu    sync.Mutex
	calls []*fakeTimer
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (t *fakeTimer) Stop() bool { t.stopped = true; return true }

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) Stopper {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{d: d, f: f}
	ft.calls = append(ft.calls, t)
	return t
}

// last returns the newest scheduled call.
func (ft *fakeTimers) last(t *testing.T) *fakeTimer {
	t.Helper()
	ft.mu.Lock()
	defer ft.mu.Unlock()
	if len(ft.calls) == 0 {
		t.Fatal("nothing scheduled")
	}
	return ft.calls[len(ft.calls)-1]
}

func (ft *fakeTimers) count() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	return len(ft.calls)
}

func TestReplacementScheduledAtRefreshPoint(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc, RetryBackoff: time.Second})
	t.Cleanup(c.Close)
	ctx := context.Background()

	first, _ := c.Get(ctx, []string{"a"})
	timer := timers.last(t)
	if timer.d != 20*time.Second {
		t.Fatalf("replacement scheduled after %s, want 20s (two thirds of 30s)", timer.d)
	}
	clock.Advance(20 * time.Second)
	timer.f()
	waitFor(t, func() bool { return ims.calls.Load() == 2 })
	r, _ := c.Get(ctx, []string{"a"})
	if !r.Hit || r.Token.AccessToken == first.Token.AccessToken {
		t.Fatalf("after the scheduled replacement: %+v; want the new token at once", r)
	}
	if next := timers.last(t); next == timer || next.d != 20*time.Second {
		t.Fatalf("the new token's replacement is not scheduled: %+v", next)
	}
}

func TestScheduledReplacementSkipsUnreadTokens(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	t.Cleanup(c.Close)
	c.Put(&Token{AccessToken: "seeded", Scopes: []string{"a"}, MintedAt: clock.Now(), ExpiresAt: clock.Now().Add(30 * time.Second)})
	clock.Advance(20 * time.Second)
	timers.last(t).f()
	c.Close() // waits for any refresh it started
	if n := ims.calls.Load(); n != 0 {
		t.Fatalf("a token nobody read was replaced: %d IMS calls", n)
	}
}

func TestScheduledReplacementRetriesAfterFailure(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc, RetryBackoff: time.Second})
	t.Cleanup(c.Close)
	c.Get(context.Background(), []string{"a"})

	ims.failWith(errors.New("ims down"))
	clock.Advance(20 * time.Second)
	scheduled := timers.count()
	timers.last(t).f()
	waitFor(t, func() bool { return timers.count() == scheduled+1 })
	if retry := timers.last(t); retry.d != time.Second {
		t.Fatalf("retry scheduled after %s, want the 1s back-off", retry.d)
	}
	ims.fail.Store(nil)
	clock.Advance(time.Second)
	timers.last(t).f()
	waitFor(t, func() bool { return ims.calls.Load() == 3 })
}

func TestPurgeAndCloseStopScheduledReplacements(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	c.Get(context.Background(), []string{"a"})
	first := timers.last(t)
	c.Purge()
	if !first.stopped {
		t.Fatal("Purge left a replacement scheduled")
	}
	c.Get(context.Background(), []string{"b"})
	second := timers.last(t)
	c.Close()
	if !second.stopped {
		t.Fatal("Close left a replacement scheduled")
	}
	second.f() // a timer that fires anyway after Close starts nothing
	if n := ims.calls.Load(); n != 2 {
		t.Fatalf("IMS calls = %d, want 2", n)
	}
}
