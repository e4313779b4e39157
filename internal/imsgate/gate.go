// Package imsgate guards one credential's traffic to Adobe IMS: it caps the
// token requests in flight at once and remembers when IMS is throttling the
// credential, so that no request leaves the plugin until IMS allows it.
//
// Adobe throttles an integration as a whole, so one Gate serves every IMS
// client made for a credential. It knows nothing about Vault or HTTP: the
// IMS client tells it what IMS answered. Time comes from an injected clock,
// so tests never sleep through a throttle window.
package imsgate

import (
	"context"
	"fmt"
	"sync"
	"time"
)

const (
	// DefaultLimit is how many token requests may be in flight at once.
	DefaultLimit = 4
	// MinLimit and MaxLimit bound the limit; New and SetLimit clamp to them.
	MinLimit = 1
	MaxLimit = 64

	// MaxWait is the longest throttle a request waits out: a longer one
	// fails the request at once rather than hold a read that long.
	MaxWait = 5 * time.Second

	// UnknownThrottle is how long a throttle of unknown length (a 429
	// without Retry-After) is assumed to last the first time; each further
	// one in a row doubles it, up to MaxUnknownThrottle.
	UnknownThrottle    = 30 * time.Second
	MaxUnknownThrottle = 15 * time.Minute
)

// Options configure a Gate.
type Options struct {
	// Limit is how many token requests may be in flight at once: 0 means
	// DefaultLimit; other values are clamped to [MinLimit, MaxLimit].
	Limit int
	// Now is the clock throttle windows are measured by; nil means time.Now.
	Now func() time.Time
	// OnThrottle, if set, is told the end of a throttle window longer than
	// MaxWait each time one begins or moves later, outside the gate's lock,
	// so that the caller can remember it beyond this gate: a restarted
	// process or another node then respects it too (see Restore). epoch is
	// the credential's (see Epoch): the gate may serve another by the time
	// OnThrottle runs.
	OnThrottle func(epoch uint64, until time.Time)
}

// Gate is safe for concurrent use. A nil *Gate lets everything through and
// remembers nothing, so that callers need not check for one.
type Gate struct {
	now        func() time.Time
	onThrottle func(epoch uint64, until time.Time)

	mu       sync.Mutex
	limit    int
	inFlight int
	queue    []*waiter // FIFO, so a burst is served in order

	until   time.Time     // no request before this moment
	guessed bool          // until is our guess, IMS named no end
	step    time.Duration // the last guessed length; 0 after a success
	epoch   uint64        // the credential served: Reset starts another
}

type waiter struct {
	ready   chan struct{} // closed when granted
	granted bool          // under Gate.mu
}

// New returns a gate with no request in flight and no throttle.
func New(o Options) *Gate {
	g := &Gate{now: o.Now, onThrottle: o.OnThrottle, limit: clampLimit(o.Limit)}
	if g.now == nil {
		g.now = time.Now
	}
	return g
}

func clampLimit(n int) int {
	if n == 0 {
		return DefaultLimit
	}
	return min(max(n, MinLimit), MaxLimit)
}

// SetLimit changes the cap at once; a value outside [MinLimit, MaxLimit]
// is clamped. Waiters keep their place: a higher cap lets the first of them
// through now; a lower one lets none through until the requests in flight
// have fallen below it.
func (g *Gate) SetLimit(n int) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limit = clampLimit(n)
	g.grantLocked()
}

// Limit returns the cap.
func (g *Gate) Limit() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.limit
}

// InFlight returns how many requests hold a slot; Waiting, how many wait
// for one. Both are for metrics.
func (g *Gate) InFlight() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inFlight
}

// Waiting returns how many requests wait for a slot.
func (g *Gate) Waiting() int {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.queue)
}

// Enter admits a token request: it waits out a throttle of at most MaxWait
// (failing at once with a *ThrottledError for a longer one), then waits
// within ctx for a slot (failing with a *BusyError if none frees up in
// time). On success the caller must call release once the request is done.
func (g *Gate) Enter(ctx context.Context) (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	if err := g.AwaitThrottle(ctx); err != nil {
		return nil, err
	}
	release, err = g.acquire(ctx)
	if err != nil {
		return nil, err
	}
	// A throttle may have begun while this request waited for its slot.
	if err := g.AwaitThrottle(ctx); err != nil {
		release()
		return nil, err
	}
	return release, nil
}

func (g *Gate) acquire(ctx context.Context) (func(), error) {
	g.mu.Lock()
	if g.inFlight < g.limit && len(g.queue) == 0 {
		g.inFlight++
		g.mu.Unlock()
		return g.releaser(), nil
	}
	w := &waiter{ready: make(chan struct{})}
	g.queue = append(g.queue, w)
	g.mu.Unlock()

	start := time.Now()
	select {
	case <-w.ready:
		return g.releaser(), nil
	case <-ctx.Done():
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if w.granted {
		// The slot came as the context ended: hand it on.
		g.inFlight--
		g.grantLocked()
	} else {
		g.dropLocked(w)
	}
	return nil, &BusyError{InFlight: g.inFlight, Limit: g.limit, Waited: time.Since(start), Err: ctx.Err()}
}

func (g *Gate) releaser() func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.inFlight--
			g.grantLocked()
		})
	}
}

func (g *Gate) grantLocked() {
	for g.inFlight < g.limit && len(g.queue) > 0 {
		w := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		w.granted = true
		g.inFlight++
		close(w.ready)
	}
}

func (g *Gate) dropLocked(w *waiter) {
	for i, q := range g.queue {
		if q == w {
			g.queue = append(g.queue[:i], g.queue[i+1:]...)
			return
		}
	}
}

// AwaitThrottle returns at once when IMS is not throttling the credential,
// waits within ctx when the throttle ends within MaxWait, and otherwise
// fails at once with a *ThrottledError. It takes no slot: it is for
// requests that must respect a throttle without counting against the cap.
func (g *Gate) AwaitThrottle(ctx context.Context) error {
	if g == nil {
		return nil
	}
	var waited time.Time
	for {
		d, terr := g.Check()
		if terr != nil {
			return terr
		}
		// Once waited for, a window that has not moved is over, whatever an
		// injected clock says.
		if d <= 0 || !g.ThrottledUntil().After(waited) {
			return nil
		}
		waited = g.ThrottledUntil()
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
			return g.throttledError()
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return g.throttledError()
		}
	}
}

// Check says how long a request must wait for the throttle to end: 0 when
// there is none, up to MaxWait, or a *ThrottledError when it is longer.
func (g *Gate) Check() (time.Duration, error) {
	if g == nil {
		return 0, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	d := g.until.Sub(g.now())
	switch {
	case d <= 0:
		return 0, nil
	case d > MaxWait:
		return 0, g.throttledErrorLocked()
	}
	return d, nil
}

// ThrottledUntil returns when the plugin will next send a request for the
// credential, rounded up to a whole second, or the zero time when IMS is
// not throttling it.
func (g *Gate) ThrottledUntil() time.Time {
	if g == nil {
		return time.Time{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.now().Before(g.until) {
		return time.Time{}
	}
	return ceilSecond(g.until)
}

// Epoch names the credential the gate serves now; Reset starts another. A
// request remembers it when sent, so that IMS's answer to it is not taken
// for another credential's (see ThrottleFor).
func (g *Gate) Epoch() uint64 {
	if g == nil {
		return 0
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.epoch
}

// Throttle records that IMS asked for retryAfter before the next request
// (a 429 or 503 with Retry-After). A window already known to end later is
// kept. It returns a *ThrottledError when the window is longer than MaxWait,
// and nil when a request may wait it out.
func (g *Gate) Throttle(retryAfter time.Duration) error {
	return g.ThrottleFor(g.Epoch(), retryAfter)
}

// ThrottleFor is Throttle for a request sent on behalf of the credential of
// epoch. If the gate serves another credential since (Reset), IMS throttled
// one it no longer serves: the gate records nothing, and the error, for
// that request alone, names the window IMS gave it.
func (g *Gate) ThrottleFor(epoch uint64, retryAfter time.Duration) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	now := g.now()
	if epoch != g.epoch {
		g.mu.Unlock()
		if retryAfter > MaxWait {
			return &ThrottledError{Until: ceilSecond(now.Add(retryAfter))}
		}
		return nil
	}
	moved := g.extendLocked(now.Add(max(retryAfter, 0)), false)
	var err error
	if g.until.Sub(now) > MaxWait {
		err = g.throttledErrorLocked()
	}
	g.unlockAndTell(moved && err != nil)
	return err
}

// ThrottleUnknown records a throttle of unknown length (a 429 without
// Retry-After): UnknownThrottle the first time, doubling with each one in a
// row up to MaxUnknownThrottle. Answers to requests sent together land in
// the same window and do not double it. It returns the window in force.
func (g *Gate) ThrottleUnknown() error {
	return g.ThrottleUnknownFor(g.Epoch())
}

// ThrottleUnknownFor is ThrottleUnknown for a request sent on behalf of the
// credential of epoch; for one the gate no longer serves it records nothing
// and names the first guess, for that request alone.
func (g *Gate) ThrottleUnknownFor(epoch uint64) error {
	if g == nil {
		return nil
	}
	g.mu.Lock()
	now := g.now()
	if epoch != g.epoch {
		g.mu.Unlock()
		return &ThrottledError{Until: ceilSecond(now.Add(UnknownThrottle)), Guessed: true}
	}
	moved := false
	if !(g.guessed && now.Before(g.until)) {
		if g.step == 0 {
			g.step = UnknownThrottle
		} else {
			g.step = min(2*g.step, MaxUnknownThrottle)
		}
		moved = g.extendLocked(now.Add(g.step), true)
	}
	err := g.throttledErrorLocked()
	g.unlockAndTell(moved)
	return err
}

// Restore records a throttle window remembered from elsewhere (OnThrottle's,
// before a restart or on another node), without telling OnThrottle again. A
// window already known to end later is kept; one that has ended changes
// nothing.
func (g *Gate) Restore(until time.Time) {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.extendLocked(until, false)
}

// unlockAndTell releases g.mu and, if tell, tells OnThrottle the window's
// end as it stands: outside the lock, as OnThrottle may block on storage.
func (g *Gate) unlockAndTell(tell bool) {
	epoch, until := g.epoch, g.until
	g.mu.Unlock()
	if tell && g.onThrottle != nil {
		g.onThrottle(epoch, until)
	}
}

// Succeeded records that IMS served a request, which ends the doubling of
// guessed throttles. A window in force is kept: the answer may be to a
// request sent before it began.
func (g *Gate) Succeeded() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.step = 0
}

// Reset forgets the throttle, for when the gate is to serve another
// credential, and starts a new epoch: answers to requests sent before it no
// longer throttle the gate. Slots and waiters are kept.
func (g *Gate) Reset() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.until, g.guessed, g.step = time.Time{}, false, 0
	g.epoch++
}

// extendLocked moves the window's end to until if that is later, and says
// whether it did.
func (g *Gate) extendLocked(until time.Time, guessed bool) bool {
	if !until.After(g.until) {
		return false
	}
	g.until, g.guessed = until, guessed
	return true
}

// ceilSecond rounds t up to a whole second, for showing: RFC 3339 without
// fractions must never name a moment before the real end.
func ceilSecond(t time.Time) time.Time {
	if s := t.Truncate(time.Second); !s.Equal(t) {
		return s.Add(time.Second)
	}
	return t
}

func (g *Gate) throttledError() *ThrottledError {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.throttledErrorLocked()
}

func (g *Gate) throttledErrorLocked() *ThrottledError {
	return &ThrottledError{Until: ceilSecond(g.until), Guessed: g.guessed}
}

// ThrottledError says a request was not sent, or not sent again, because
// IMS is throttling the credential.
type ThrottledError struct {
	Until   time.Time // the plugin sends no request for the credential before then (a whole second)
	Guessed bool      // IMS named no end (429 without Retry-After): Until is the plugin's back-off
}

func (e *ThrottledError) Error() string {
	msg := "Adobe IMS is throttling this credential"
	if e.Guessed {
		msg += " and named no end to it"
	}
	return msg + "; the plugin will try again after " + ceilSecond(e.Until).UTC().Format(time.RFC3339)
}

// BusyError says a request found every slot taken and none freed up before
// its context ended.
type BusyError struct {
	InFlight int           // requests in flight when it gave up
	Limit    int           // the cap at that moment
	Waited   time.Duration // how long it waited for a slot
	Err      error         // the context's error
}

func (e *BusyError) Error() string {
	n := fmt.Sprintf("%d requests to Adobe IMS are", e.InFlight)
	if e.InFlight == 1 {
		n = "1 request to Adobe IMS is"
	}
	return fmt.Sprintf("%s already in flight for this credential (max_concurrent_ims_requests is %d) and none finished within %s: %v",
		n, e.Limit, e.Waited.Round(time.Millisecond), e.Err)
}

func (e *BusyError) Unwrap() error { return e.Err }
