package tokencache

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

// fakeClock moves only when told.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) }

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
	mustGet(t, c, "a")
	c.Purge()
	if len(c.States()) != 0 {
		t.Fatalf("states after purge: %+v", c.States())
	}

	// A mint that started before a purge does not land in the cache.
	ims.release = make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// A mint already running when Purge happens still returns its token;
		// it only does not store it.
		if _, err := c.Get(ctx, []string{"a"}); err != nil {
			t.Errorf("get with a purge during its mint: %v", err)
		}
	}()
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
	mustGet(t, c, "a")
	mustGet(t, c, "b")
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
	mustGet(t, c, "used")
	if !c.Put(&Token{AccessToken: "unused", Scopes: []string{"unused"}, MintedAt: clock.Now(), ExpiresAt: clock.Now().Add(24 * time.Hour)}, c.Generation()) {
		t.Fatal("Put with the current generation stored nothing")
	}

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
	// Every entry is skipped: "used" is backing off, "unused" was not read.
	if n, err := c.Refresh(ctx); n != 0 || err != nil {
		t.Fatalf("refresh during back-off = %d, %v; want 0, nil", n, err)
	}
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

// mustGet reads scopes from c and fails the test if that fails: a setup read
// that failed unnoticed would make a later check fail for the wrong reason.
func mustGet(t *testing.T, c *Cache, scopes ...string) Result {
	t.Helper()
	r, err := c.Get(context.Background(), scopes)
	if err != nil {
		t.Fatalf("Get(%q): %v", scopes, err)
	}
	return r
}

// fakeTimers records scheduled calls so a test fires them at will, and
// knows which are still armed: neither stopped nor fired.
type fakeTimers struct {
	mu    sync.Mutex
	calls []*fakeTimer
}

type fakeTimer struct {
	ft      *fakeTimers
	d       time.Duration
	f       func()
	stopped bool // guarded by ft.mu
	fired   bool // guarded by ft.mu
}

func (t *fakeTimer) Stop() bool {
	t.ft.mu.Lock()
	defer t.ft.mu.Unlock()
	wasArmed := !t.stopped && !t.fired
	t.stopped = true
	return wasArmed
}

// fire runs the scheduled call, as the timer would at its time.
func (t *fakeTimer) fire() {
	t.ft.mu.Lock()
	t.fired = true
	t.ft.mu.Unlock()
	t.f()
}

func (t *fakeTimer) isStopped() bool {
	t.ft.mu.Lock()
	defer t.ft.mu.Unlock()
	return t.stopped
}

func (ft *fakeTimers) AfterFunc(d time.Duration, f func()) Stopper {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	t := &fakeTimer{ft: ft, d: d, f: f}
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

// armed counts the scheduled calls that would still run.
func (ft *fakeTimers) armed() int {
	ft.mu.Lock()
	defer ft.mu.Unlock()
	n := 0
	for _, t := range ft.calls {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// recv waits for ch to deliver or close, failing the test after 10s rather
// than hanging it.
func recv[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen within 10s", what)
	}
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
	timer.fire()
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
	if !c.Put(&Token{AccessToken: "seeded", Scopes: []string{"a"}, MintedAt: clock.Now(), ExpiresAt: clock.Now().Add(30 * time.Second)}, c.Generation()) {
		t.Fatal("Put with the current generation stored nothing")
	}
	clock.Advance(20 * time.Second)
	timers.last(t).fire()
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
	mustGet(t, c, "a")

	ims.failWith(errors.New("ims down"))
	clock.Advance(20 * time.Second)
	scheduled := timers.count()
	timers.last(t).fire()
	waitFor(t, func() bool { return timers.count() == scheduled+1 })
	if retry := timers.last(t); retry.d != time.Second {
		t.Fatalf("retry scheduled after %s, want the 1s back-off", retry.d)
	}
	ims.fail.Store(nil)
	clock.Advance(time.Second)
	timers.last(t).fire()
	waitFor(t, func() bool { return ims.calls.Load() == 3 })
}

func TestPurgeAndCloseStopScheduledReplacements(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	mustGet(t, c, "a")
	first := timers.last(t)
	c.Purge()
	if !first.isStopped() {
		t.Fatal("Purge left a replacement scheduled")
	}
	mustGet(t, c, "b")
	second := timers.last(t)
	c.Close()
	if !second.isStopped() {
		t.Fatal("Close left a replacement scheduled")
	}
	second.fire() // a timer that fires anyway after Close starts nothing
	if n := ims.calls.Load(); n != 2 {
		t.Fatalf("IMS calls = %d, want 2", n)
	}
}

// tokenFor returns a token for scopes minted now, living for lifetime.
func tokenFor(clock *fakeClock, scopes []string, lifetime time.Duration) *Token {
	now := clock.Now()
	return &Token{AccessToken: "minted-" + Key(scopes), TokenType: "bearer", Scopes: scopes, MintedAt: now, ExpiresAt: now.Add(lifetime)}
}

// While a background refresh hangs at IMS, readers past the refresh point
// must not each start a goroutine to wait for it, and its failure must be
// reported once, not once per reader.
func TestOneBackgroundRefreshPerScopeSet(t *testing.T) {
	clock := newFakeClock()
	timers := &fakeTimers{}
	hanging := make(chan struct{}) // closed when the refresh reaches IMS
	release := make(chan struct{}) // closed to let it fail
	retried := make(chan struct{}) // closed when a later refresh reaches IMS
	var calls atomic.Int64
	mint := func(ctx context.Context, scopes []string) (*Token, error) {
		switch calls.Add(1) {
		case 2:
			close(hanging)
			select {
			case <-release:
				return nil, errors.New("ims down")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case 3:
			close(retried)
		}
		return tokenFor(clock, scopes, 30*time.Second), nil
	}
	ctx := context.Background()
	var warnings atomic.Int64
	var c *Cache
	c = New(mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc, RetryBackoff: time.Second,
		OnBackgroundError: func(string, error) {
			if warnings.Add(1) != 1 {
				return
			}
			// By the time a failure is reported, the failed refresh no
			// longer counts as in flight (else a retry timer firing now
			// would be lost): once the back-off is over, a reader starts
			// the next one.
			clock.Advance(time.Second)
			if _, err := c.Get(ctx, []string{"a"}); err != nil {
				t.Error(err)
			}
		}})
	t.Cleanup(c.Close)
	if _, err := c.Get(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second) // the refresh point of a 30s token

	baseline := runtime.NumGoroutine()
	const readers, reads = 4, 5000
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for range reads / readers {
				if r, err := c.Get(ctx, []string{"a"}); err != nil || !r.Hit {
					t.Errorf("get past the refresh point = %+v, %v; want the old token at once", r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	recv(t, hanging, "the background refresh")
	// One refresh goroutine, plus slack for the runtime's own.
	if n := runtime.NumGoroutine(); n > baseline+5 {
		t.Errorf("%d goroutines while the refresh hangs, %d before %d reads: want one refresh goroutine, not one per read", n, baseline, reads)
	}

	close(release)
	recv(t, retried, "the refresh after the back-off")
	c.Close() // waits for every background refresh
	if n := warnings.Load(); n != 1 {
		t.Errorf("OnBackgroundError called %d times, want once for the one failed refresh", n)
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("IMS calls = %d, want 3", n)
	}
}

// A reader's mint that IMS answers after Close, its cancellation ignored,
// arms no replacement.
func TestMintFinishingAfterCloseArmsNothing(t *testing.T) {
	clock := newFakeClock()
	timers := &fakeTimers{}
	started := make(chan struct{})
	release := make(chan struct{})
	mint := func(_ context.Context, scopes []string) (*Token, error) {
		close(started)
		<-release
		return tokenFor(clock, scopes, time.Hour), nil
	}
	c := New(mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	got := make(chan error, 1)
	go func() { _, err := c.Get(context.Background(), []string{"a"}); got <- err }()
	recv(t, started, "the mint")
	c.Close()
	close(release)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("get whose mint finished after Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("get did not return within 10s")
	}
	if n := timers.armed(); n != 0 {
		t.Fatalf("%d timers armed after Close, want none", n)
	}
}

// A token minted with the credential a Purge retired is not stored by Put.
func TestPutWithStaleGenerationStoresNothing(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: time.Hour}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	t.Cleanup(c.Close)
	gen := c.Generation()
	c.Purge()
	if c.Generation() == gen {
		t.Fatal("Purge did not move the generation on")
	}
	if c.Put(tokenFor(clock, []string{"a"}, time.Hour), gen) {
		t.Fatal("Put with the generation from before a Purge reported storing")
	}
	if s := c.States(); len(s) != 0 || timers.count() != 0 {
		t.Fatalf("after Put with a stale generation: states %+v, %d timers; want none", s, timers.count())
	}

	tok := tokenFor(clock, []string{"a"}, time.Hour)
	if !c.Put(tok, c.Generation()) {
		t.Fatal("Put with the current generation stored nothing")
	}
	if r, err := c.Get(context.Background(), []string{"a"}); err != nil || !r.Hit || r.Token != tok {
		t.Fatalf("get after Put = %+v, %v; want a hit on the token put", r, err)
	}
	if n := timers.armed(); n != 1 || ims.calls.Load() != 0 {
		t.Fatalf("%d replacements armed, %d IMS calls; want 1 and 0", n, ims.calls.Load())
	}
}

// A Purge that lands after a mint's generation check, but before its token
// is stored, must still leave nothing behind: no token (it was made with a
// credential that may no longer apply) and no timer to replace it.
func TestPurgeAfterGenerationCheckLeavesNothingBehind(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: time.Hour}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	t.Cleanup(c.Close)
	purged := make(chan struct{})
	var once sync.Once
	c.testHookBeforeStore = func() {
		once.Do(func() {
			// If the cache holds its lock from the check to the store, the
			// Purge has to wait for the store; if not, let it land in between.
			locked := !c.mu.TryLock()
			if !locked {
				c.mu.Unlock()
			}
			go func() { c.Purge(); close(purged) }()
			if !locked {
				<-purged
			}
		})
	}
	ctx := context.Background()
	if _, err := c.Get(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	recv(t, purged, "the purge")
	if s := c.States(); len(s) != 0 {
		t.Fatalf("states after a purge during the store: %+v; want none", s)
	}
	if n := timers.armed(); n != 0 {
		t.Fatalf("%d replacements armed after the purge, want none", n)
	}
	if r, err := c.Get(ctx, []string{"a"}); err != nil || r.Hit || ims.calls.Load() != 2 {
		t.Fatalf("get after the purge = %+v, %v (%d IMS calls); want a new mint", r, err, ims.calls.Load())
	}
}

// Close is an unmount: a background refresh it cancels must not be reported
// as a failure nor leave a retry armed.
func TestCloseLeavesNothingArmedAndReportsNothing(t *testing.T) {
	clock := newFakeClock()
	timers := &fakeTimers{}
	hanging := make(chan struct{})
	var calls atomic.Int64
	var refreshEnded atomic.Bool
	mint := func(ctx context.Context, scopes []string) (*Token, error) {
		if calls.Add(1) == 2 {
			close(hanging)
			<-ctx.Done()
			refreshEnded.Store(true)
			return nil, fmt.Errorf("requesting a token: %w", ctx.Err())
		}
		return tokenFor(clock, scopes, 30*time.Second), nil
	}
	var warnings atomic.Int64
	c := New(mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc, RetryBackoff: time.Second,
		OnBackgroundError: func(string, error) { warnings.Add(1) }})
	if _, err := c.Get(context.Background(), []string{"a"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(20 * time.Second)
	timers.last(t).fire()
	recv(t, hanging, "the background refresh")

	c.Close()
	if !refreshEnded.Load() {
		t.Fatal("Close returned before the background refresh ended")
	}
	if n := timers.armed(); n != 0 {
		t.Errorf("%d timers armed after Close, want none", n)
	}
	if n := warnings.Load(); n != 0 {
		t.Errorf("OnBackgroundError called %d times for a refresh cancelled by Close, want none", n)
	}

	if c.Put(tokenFor(clock, []string{"b"}, 30*time.Second), c.Generation()) {
		t.Error("Put after Close reported storing")
	}
	if n := timers.armed(); n != 0 {
		t.Errorf("%d timers armed by Put after Close, want none", n)
	}
}

// A reader that arrives after a Purge while a mint started before it is
// still at IMS must not join that mint: its token comes from a credential
// the Purge retired. The reader waits for a mint of its own.
func TestReaderAfterPurgeDoesNotJoinAnEarlierMint(t *testing.T) {
	c, ims, _ := newTestCache(t, time.Hour)
	ims.release = make(chan struct{})
	ctx := context.Background()

	before := make(chan Result, 1)
	go func() { r, _ := c.Get(ctx, []string{"a"}); before <- r }()
	waitFor(t, func() bool { return ims.calls.Load() == 1 })
	c.Purge()
	after := make(chan Result, 1)
	go func() { r, _ := c.Get(ctx, []string{"a"}); after <- r }()
	// The later reader starts a mint of its own. (If it joined the earlier
	// mint there is no second call: give up waiting and let the answers
	// below tell.)
	for deadline := time.Now().Add(2 * time.Second); ims.calls.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	close(ims.release)

	var old, fresh Result
	select {
	case old = <-before:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader from before the purge did not return within 10s")
	}
	select {
	case fresh = <-after:
	case <-time.After(10 * time.Second):
		t.Fatal("the reader from after the purge did not return within 10s")
	}
	if fresh.Token == nil || old.Token == nil || fresh.Token.AccessToken == old.Token.AccessToken {
		t.Fatalf("the reader that came after the purge got %+v, the one before %+v: want a token minted after the purge", fresh.Token, old.Token)
	}
	if r, err := c.Get(ctx, []string{"a"}); err != nil || !r.Hit || r.Token.AccessToken != fresh.Token.AccessToken {
		t.Fatalf("get after both = %+v, %v; want a hit on the token minted after the purge", r, err)
	}
}

// Cache hits count as use: a token that was itself a background replacement
// is replaced in its turn while readers keep hitting it. Two replacements
// in a row, with nothing but hits after the first read.
func TestReplacementsContinueUnderHitOnlyTraffic(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 30 * time.Second}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	t.Cleanup(c.Close)
	ctx := context.Background()
	if r, err := c.Get(ctx, []string{"a"}); err != nil || r.Hit {
		t.Fatalf("cold get = %+v, %v", r, err)
	}

	want := int64(1)
	for round := 1; round <= 2; round++ {
		clock.Advance(5 * time.Second)
		if r, err := c.Get(ctx, []string{"a"}); err != nil || !r.Hit {
			t.Fatalf("round %d: get = %+v, %v; want a hit", round, r, err)
		}
		clock.Advance(15 * time.Second) // the current token's refresh point
		timer := timers.last(t)
		timer.fire()
		want++
		for deadline := time.Now().Add(5 * time.Second); ims.calls.Load() < want && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		if n := ims.calls.Load(); n != want {
			t.Fatalf("replacement %d: %d IMS calls, want %d: a token read only through cache hits was not replaced at its refresh point", round, n, want)
		}
		waitFor(t, func() bool { return timers.last(t) != timer }) // the new token's replacement is armed
	}
}

// A reader that found no servable token and starts a mint re-checks once it
// holds the single flight: a mint that finished in between has stored a
// token, and asking IMS again would waste a call (Adobe throttles
// integrations that mint too often). Many readers arriving together at an
// expired token, round after round, make one IMS call per round. Whether a
// reader looks before a mint stores its token and reaches the flight after
// it ended is up to the scheduler: without the re-check, one did within the
// first 250 rounds in each of 50 runs.
func TestExpiredTokenReplacedOnceByConcurrentReaders(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: time.Hour}
	timers := &fakeTimers{}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: timers.AfterFunc})
	t.Cleanup(c.Close)
	ctx := context.Background()
	const rounds, readers = 2000, 16
	for round := 1; round <= rounds; round++ {
		clock.Advance(time.Hour) // the token is past its expiry
		start := make(chan struct{})
		var wg sync.WaitGroup
		for range readers {
			wg.Go(func() {
				<-start
				if _, err := c.Get(ctx, []string{"a"}); err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if n := ims.calls.Load(); n != int64(round) {
			t.Fatalf("round %d: %d readers of an expired token made %d IMS calls in all, want %d (one per round)", round, readers, n, round)
		}
	}
}

// Without options, a failed refresh of a scope set waits 5 seconds before
// the next attempt, doubling after each failure up to 5 minutes.
func TestDefaultRetryBackoffDoublesUpToFiveMinutes(t *testing.T) {
	clock := newFakeClock()
	ims := &fakeIMS{clock: clock, lifetime: 24 * time.Hour}
	c := New(ims.mint, Options{Now: clock.Now, AfterFunc: (&fakeTimers{}).AfterFunc})
	t.Cleanup(c.Close)
	ctx := context.Background()
	if _, err := c.Get(ctx, []string{"a"}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(17 * time.Hour) // past the refresh point
	ims.failWith(errors.New("ims down"))
	for _, want := range []time.Duration{5, 10, 20, 40, 80, 160, 300, 300} {
		want *= time.Second
		if n, err := c.Refresh(ctx); n != 0 || err == nil {
			t.Fatalf("refresh with IMS down = %d, %v; want 0 and an error", n, err)
		}
		s := c.States()
		if len(s) != 1 {
			t.Fatalf("states %+v", s)
		}
		if got := s[0].NextAttempt.Sub(clock.Now()); got != want {
			t.Fatalf("after a failed refresh the next attempt is %s away, want %s", got, want)
		}
		clock.Advance(want)
	}
}

// Refresh replaces every token that is due, not only the first it finds.
func TestRefreshReplacesEveryDueToken(t *testing.T) {
	c, ims, clock := newTestCache(t, 24*time.Hour)
	ctx := context.Background()
	for _, s := range []string{"a", "b", "c"} {
		if _, err := c.Get(ctx, []string{s}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Advance(17 * time.Hour)
	if n, err := c.Refresh(ctx); n != 3 || err != nil {
		t.Fatalf("refresh of three due tokens = %d, %v; want 3, nil", n, err)
	}
	if n := ims.calls.Load(); n != 6 {
		t.Fatalf("IMS calls = %d, want 6", n)
	}
}

// States shows each scope set's token times and last read, never the token.
func TestStatesShowTimesNotTokens(t *testing.T) {
	c, _, clock := newTestCache(t, 30*time.Minute)
	minted := clock.Now()
	r, err := c.Get(context.Background(), []string{"b", "a"})
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(time.Minute)
	mustGet(t, c, "a", "b")
	s := c.States()
	if len(s) != 1 {
		t.Fatalf("states %+v, want one", s)
	}
	want := State{
		Scopes: "a,b", MintedAt: minted, ExpiresAt: minted.Add(30 * time.Minute),
		RefreshAt: minted.Add(20 * time.Minute), SafeEnd: minted.Add(27 * time.Minute), LastUsed: minted.Add(time.Minute),
	}
	if s[0] != want {
		t.Fatalf("state %+v\nwant  %+v", s[0], want)
	}
	if strings.Contains(fmt.Sprintf("%+v", s), r.Token.AccessToken) {
		t.Fatal("States shows the token")
	}
}
