package imsgate

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// told records what OnThrottle was told.
type told struct {
	mu    sync.Mutex
	until []time.Time
}

func (r *told) record(_ uint64, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.until = append(r.until, until)
}

func (r *told) get() []time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Time(nil), r.until...)
}

// TestOnThrottleIsToldOfEveryLongWindow: OnThrottle hears of a window
// longer than MaxWait when it begins and each time it moves later, never of
// one a request waits out, nor of one that ends earlier than the window in
// force; Restore brings a window back without telling.
func TestOnThrottleIsToldOfEveryLongWindow(t *testing.T) {
	c := newClock()
	r := &told{}
	g := New(Options{Now: c.Now, OnThrottle: r.record})
	start := c.Now()

	if err := g.Throttle(MaxWait); err != nil { // waited out within a read
		t.Fatalf("a window of MaxWait = %v, want it waited out", err)
	}
	if got := r.get(); len(got) != 0 {
		t.Fatalf("OnThrottle told of a window a read waits out: %v", got)
	}
	if err := g.Throttle(time.Minute); err == nil {
		t.Fatal("a one-minute window did not fail the request")
	}
	if err := g.Throttle(30 * time.Second); err == nil { // ends before the window in force
		t.Fatal("a request inside the window was let through")
	}
	if err := g.Throttle(2 * time.Minute); err == nil {
		t.Fatal("a two-minute window did not fail the request")
	}
	want := []time.Time{start.Add(time.Minute), start.Add(2 * time.Minute)}
	if got := r.get(); len(got) != 2 || !got[0].Equal(want[0]) || !got[1].Equal(want[1]) {
		t.Fatalf("OnThrottle told %v, want %v", got, want)
	}

	c.Advance(3 * time.Minute)
	if err := g.ThrottleUnknown(); err == nil {
		t.Fatal("a 429 without Retry-After did not fail the request")
	}
	if got := r.get(); len(got) != 3 || !got[2].Equal(c.Now().Add(UnknownThrottle)) {
		t.Fatalf("OnThrottle after a guessed window: %v, want a third at %s", got, c.Now().Add(UnknownThrottle))
	}
	if err := g.ThrottleUnknown(); err == nil { // an answer to a request sent in the same window
		t.Fatal("a request inside the guessed window was let through")
	}
	if n := len(r.get()); n != 3 {
		t.Fatalf("OnThrottle told %d times, want 3: the guessed window did not move", n)
	}

	// Restore: a later window is taken without telling, an earlier one
	// changes nothing.
	later := c.Now().Add(time.Hour)
	g.Restore(later)
	if got := g.ThrottledUntil(); !got.Equal(ceilSecond(later)) {
		t.Fatalf("after Restore the gate is throttled until %s, want %s", got, later)
	}
	g.Restore(c.Now().Add(time.Minute))
	if got := g.ThrottledUntil(); !got.Equal(ceilSecond(later)) {
		t.Fatalf("Restore of an earlier window moved the end to %s", got)
	}
	if n := len(r.get()); n != 3 {
		t.Fatalf("Restore told OnThrottle: %d calls, want 3", n)
	}
}

// TestRestoreOfAnEndedWindowThrottlesNothing: a stored window that has
// passed lets requests through.
func TestRestoreOfAnEndedWindowThrottlesNothing(t *testing.T) {
	c := newClock()
	g := New(Options{Now: c.Now})
	g.Restore(c.Now().Add(-time.Second))
	if d, err := g.Check(); d != 0 || err != nil {
		t.Fatalf("Check after restoring an ended window = %s, %v; want 0, nil", d, err)
	}
	if got := g.ThrottledUntil(); !got.IsZero() {
		t.Fatalf("ThrottledUntil = %s, want none", got)
	}
}

// TestAnswerForAnEarlierCredentialThrottlesNothing: a request sent before
// Reset (the gate now serves another credential) and answered 429 fails
// with the window IMS gave it, but the gate records no throttle and
// OnThrottle hears nothing; answers for the current credential still count.
func TestAnswerForAnEarlierCredentialThrottlesNothing(t *testing.T) {
	c := newClock()
	r := &told{}
	g := New(Options{Now: c.Now, OnThrottle: r.record})
	before := g.Epoch()
	g.Reset()

	var te *ThrottledError
	if err := g.ThrottleFor(before, time.Minute); !errors.As(err, &te) || !te.Until.Equal(ceilSecond(c.Now().Add(time.Minute))) {
		t.Fatalf("ThrottleFor an earlier credential = %v, want that request's own window of a minute", err)
	}
	if err := g.ThrottleUnknownFor(before); !errors.As(err, &te) || !te.Guessed {
		t.Fatalf("ThrottleUnknownFor an earlier credential = %v, want a guessed window", err)
	}
	if until := g.ThrottledUntil(); !until.IsZero() || len(r.get()) != 0 {
		t.Fatalf("after answers for an earlier credential: throttled until %v, OnThrottle told %v; want neither", until, r.get())
	}

	if err := g.ThrottleFor(g.Epoch(), time.Minute); err == nil || g.ThrottledUntil().IsZero() || len(r.get()) != 1 {
		t.Fatalf("ThrottleFor the current credential = %v, throttled until %v, told %v; want the window recorded and told", err, g.ThrottledUntil(), r.get())
	}
}
