package imsgate

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

// clock is a fake clock that moves only when told.
type clock = testclock.Clock

func newClock() *clock { return testclock.New(time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)) }

// next receives a release func, or fails the test after two seconds.
func next(t *testing.T, releases <-chan func()) func() {
	t.Helper()
	select {
	case r := <-releases:
		return r
	case <-time.After(2 * time.Second):
		t.Fatal("no waiter was let in")
		return nil
	}
}

// eventually polls cond for up to two seconds.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(2 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestLimitClamped(t *testing.T) {
	tests := []struct{ in, want int }{{0, DefaultLimit}, {-3, MinLimit}, {1, 1}, {64, 64}, {65, MaxLimit}}
	for _, tt := range tests {
		if got := New(Options{Limit: tt.in}).Limit(); got != tt.want {
			t.Errorf("New(Limit %d).Limit() = %d, want %d", tt.in, got, tt.want)
		}
		g := New(Options{Limit: 2})
		if g.SetLimit(tt.in); g.Limit() != tt.want {
			t.Errorf("SetLimit(%d) gave %d, want %d", tt.in, g.Limit(), tt.want)
		}
	}
}

// TestSetLimitKeepsWaiters changes the cap while requests wait: a higher cap
// lets the first waiters in, in order; a lower one lets nobody in until the
// requests in flight fall below it.
func TestSetLimitKeepsWaiters(t *testing.T) {
	g := New(Options{Limit: 1})
	first, err := g.Enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		order    []int
		releases = make(chan func(), 3)
	)
	for i := range 3 {
		go func() {
			release, err := g.Enter(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			releases <- release
		}()
		eventually(t, "the waiter to queue", func() bool { return g.Waiting() == i+1 })
	}

	g.SetLimit(3)
	r1, r2 := next(t, releases), next(t, releases)
	if g.InFlight() != 3 || g.Waiting() != 1 {
		t.Fatalf("after raising the cap: %d in flight, %d waiting; want 3, 1", g.InFlight(), g.Waiting())
	}
	mu.Lock()
	if len(order) != 2 || order[0]+order[1] != 1 {
		t.Errorf("admitted %v, want the first two waiters", order)
	}
	mu.Unlock()

	g.SetLimit(1)
	first()
	r1()
	if g.InFlight() != 1 || g.Waiting() != 1 {
		t.Fatalf("after lowering the cap and two releases: %d in flight, %d waiting; want 1, 1", g.InFlight(), g.Waiting())
	}
	r2()
	r3 := next(t, releases)
	r3()
	r3() // a second release must not free a second slot
	if g.InFlight() != 0 || g.Waiting() != 0 {
		t.Errorf("at the end: %d in flight, %d waiting; want 0, 0", g.InFlight(), g.Waiting())
	}
}

func TestEnterBusy(t *testing.T) {
	g := New(Options{Limit: 2})
	for range 2 {
		if _, err := g.Enter(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := g.Enter(ctx)

	var busy *BusyError
	if !errors.As(err, &busy) || busy.InFlight != 2 || busy.Limit != 2 || busy.Waited <= 0 || busy.Waited > time.Second {
		t.Fatalf("err = %#v, want a *BusyError with 2 in flight, limit 2, after about 20ms", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want it to wrap the context's error", err)
	}
	if want := "2 requests to Adobe IMS are already in flight for this credential (max_concurrent_ims_requests is 2)"; !strings.Contains(err.Error(), want) {
		t.Errorf("err = %q, want it to contain %q", err, want)
	}
	if g.Waiting() != 0 || g.InFlight() != 2 {
		t.Errorf("%d waiting, %d in flight; want the waiter gone and no slot taken", g.Waiting(), g.InFlight())
	}
}

// TestCapUnderLoad runs many requests through a gate whose cap changes
// under them, and checks the cap in force is never exceeded.
func TestCapUnderLoad(t *testing.T) {
	g := New(Options{Limit: 3})
	var inFlight, peak atomic.Int32
	var wg sync.WaitGroup
	for i := range 60 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 30 {
				g.SetLimit(2)
			}
			release, err := g.Enter(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			n := inFlight.Add(1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
			time.Sleep(100 * time.Microsecond)
			inFlight.Add(-1)
			release()
		}()
	}
	wg.Wait()
	if p := peak.Load(); p > 3 || p < 1 {
		t.Errorf("peak in flight %d, want 1 to 3", p)
	}
	if g.InFlight() != 0 || g.Waiting() != 0 {
		t.Errorf("%d in flight, %d waiting after all finished", g.InFlight(), g.Waiting())
	}
}

func TestThrottleWindows(t *testing.T) {
	type step struct {
		advance   time.Duration
		do        string        // "after N", "unknown", "success"
		after     time.Duration // for "after"
		wantUntil time.Duration // from the start; 0: not throttled
		wantErr   bool          // the call's result says the window is too long to wait out
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"long Retry-After", []step{
			{do: "after", after: 20 * time.Second, wantUntil: 20 * time.Second, wantErr: true},
			{advance: 14 * time.Second, do: "check", wantUntil: 20 * time.Second, wantErr: true},
			{advance: time.Second, do: "check", wantUntil: 20 * time.Second}, // 5s left: waited out
			{advance: 5 * time.Second, do: "check"},
		}},
		{"short Retry-After can be waited out", []step{
			{do: "after", after: 2 * time.Second, wantUntil: 2 * time.Second},
			{do: "check", wantUntil: 2 * time.Second},
		}},
		{"exactly MaxWait is waited out", []step{
			{do: "after", after: MaxWait, wantUntil: MaxWait},
		}},
		{"a later window is kept", []step{
			{do: "after", after: time.Minute, wantUntil: time.Minute, wantErr: true},
			{do: "after", after: 10 * time.Second, wantUntil: time.Minute, wantErr: true},
		}},
		{"shown rounded up to a whole second", []step{
			{do: "after", after: 1500 * time.Millisecond, wantUntil: 2 * time.Second},
		}},
		{"5s after a fraction is still waited out", []step{
			{advance: 300 * time.Millisecond, do: "after", after: MaxWait, wantUntil: 6 * time.Second},
		}},
		{"unknown length doubles, capped", []step{
			{do: "unknown", wantUntil: 30 * time.Second, wantErr: true},
			{advance: 10 * time.Second, do: "unknown", wantUntil: 30 * time.Second, wantErr: true}, // same window
			{advance: 20 * time.Second, do: "unknown", wantUntil: 90 * time.Second, wantErr: true},
			{advance: 60 * time.Second, do: "unknown", wantUntil: 210 * time.Second, wantErr: true},
			{advance: 120 * time.Second, do: "unknown", wantUntil: 450 * time.Second, wantErr: true},
			{advance: 240 * time.Second, do: "unknown", wantUntil: 930 * time.Second, wantErr: true},
			{advance: 480 * time.Second, do: "unknown", wantUntil: 1830 * time.Second, wantErr: true},
			{advance: 900 * time.Second, do: "unknown", wantUntil: 2730 * time.Second, wantErr: true}, // 15 minutes at most
		}},
		{"success resets the doubling", []step{
			{do: "unknown", wantUntil: 30 * time.Second, wantErr: true},
			{advance: 30 * time.Second, do: "unknown", wantUntil: 90 * time.Second, wantErr: true},
			{advance: 60 * time.Second, do: "success"},
			{do: "unknown", wantUntil: 120 * time.Second, wantErr: true},
		}},
		{"success keeps the window in force", []step{
			{do: "after", after: 20 * time.Second, wantUntil: 20 * time.Second, wantErr: true},
			{do: "success", wantUntil: 20 * time.Second, wantErr: true},
		}},
		{"unknown after a short known window", []step{
			{do: "after", after: 2 * time.Second, wantUntil: 2 * time.Second},
			{do: "unknown", wantUntil: 30 * time.Second, wantErr: true},
		}},
		{"reset", []step{
			{do: "unknown", wantUntil: 30 * time.Second, wantErr: true},
			{do: "reset"},
			{do: "unknown", wantUntil: 30 * time.Second, wantErr: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock()
			start := clk.Now()
			g := New(Options{Now: clk.Now})
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				var terr error
				switch s.do {
				case "after":
					terr = g.Throttle(s.after)
				case "unknown":
					terr = g.ThrottleUnknown()
				case "success":
					g.Succeeded()
				case "reset":
					g.Reset()
				}
				_, cerr := g.Check()
				if s.do == "after" || s.do == "unknown" {
					if (terr != nil) != s.wantErr {
						t.Fatalf("step %d (%s): error %v, want error %v", i, s.do, terr, s.wantErr)
					}
				}
				if (cerr != nil) != s.wantErr {
					t.Fatalf("step %d (%s): Check error %v, want error %v", i, s.do, cerr, s.wantErr)
				}
				var want time.Time
				if s.wantUntil != 0 {
					want = start.Add(s.wantUntil)
				}
				if got := g.ThrottledUntil(); !got.Equal(want) {
					t.Fatalf("step %d (%s): ThrottledUntil = %s, want %s", i, s.do, got, want)
				}
				var te *ThrottledError
				if cerr != nil && (!errors.As(cerr, &te) || !te.Until.Equal(want)) {
					t.Fatalf("step %d (%s): error %v, want a *ThrottledError naming %s", i, s.do, cerr, want)
				}
			}
		})
	}
}

func TestThrottledErrorText(t *testing.T) {
	until := time.Date(2025, 5, 1, 12, 0, 20, 0, time.FixedZone("CEST", 2*3600))
	tests := []struct {
		err  *ThrottledError
		want string
	}{
		{&ThrottledError{Until: until}, "Adobe IMS is throttling this credential; the plugin will try again after 2025-05-01T10:00:20Z"},
		{&ThrottledError{Until: until, Guessed: true}, "Adobe IMS is throttling this credential and named no end to it; the plugin will try again after 2025-05-01T10:00:20Z"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
}

// TestEnterThrottled: a long throttle fails at once without taking a slot;
// a short one is waited out, even when the injected clock stands still.
func TestEnterThrottled(t *testing.T) {
	clk := newClock()
	g := New(Options{Limit: 1, Now: clk.Now})
	_ = g.Throttle(20 * time.Second)

	start := time.Now()
	_, err := g.Enter(context.Background())
	var terr *ThrottledError
	if !errors.As(err, &terr) || !terr.Until.Equal(clk.Now().Add(20*time.Second)) {
		t.Fatalf("err = %v, want a *ThrottledError until +20s", err)
	}
	if time.Since(start) > time.Second || g.InFlight() != 0 {
		t.Errorf("took %s with %d in flight; want at once, no slot taken", time.Since(start), g.InFlight())
	}

	clk.Advance(time.Hour)
	_ = g.Throttle(50 * time.Millisecond) // short: nothing to report
	start = time.Now()
	release, err := g.Enter(context.Background())
	if err != nil {
		t.Fatalf("err = %v, want the short throttle waited out", err)
	}
	release()
	if waited := time.Since(start); waited < 40*time.Millisecond {
		t.Errorf("waited %s, want about 50ms", waited)
	}
}

func TestAwaitThrottleGivesUpWithContext(t *testing.T) {
	clk := newClock()
	g := New(Options{Now: clk.Now})
	_ = g.Throttle(MaxWait) // short: nothing to report
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := g.AwaitThrottle(ctx)
	var terr *ThrottledError
	if !errors.As(err, &terr) {
		t.Fatalf("err = %v, want a *ThrottledError", err)
	}
	if time.Since(start) > time.Second {
		t.Errorf("took %s: waited for a throttle that outlasts the context", time.Since(start))
	}
}

func TestNilGate(t *testing.T) {
	var g *Gate
	release, err := g.Enter(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	release()
	g.SetLimit(3)
	g.Succeeded()
	g.Reset()
	if g.Throttle(time.Hour) != nil || g.ThrottleUnknown() != nil || !g.ThrottledUntil().IsZero() ||
		g.AwaitThrottle(context.Background()) != nil || g.Limit() != 0 || g.InFlight() != 0 || g.Waiting() != 0 {
		t.Error("a nil gate held something back or remembered something")
	}
	if d, terr := g.Check(); d != 0 || terr != nil {
		t.Errorf("Check() = %s, %v", d, terr)
	}
}
