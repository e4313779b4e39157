package ims

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

// fakeClock moves only when told, so throttle windows pass without sleeping.
type fakeClock = testclock.Clock

func newFakeClock() *fakeClock { return testclock.New(time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)) }

func gatedClient(url string, gate *imsgate.Gate) *Client {
	opts := fastOptions(&recorder{})
	opts.Gate = gate
	return NewClient(url, testCreds, opts)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// blockingServer answers each token request once the test sends on proceed,
// and records the most requests it held at once.
type blockingServer struct {
	URL             string
	proceed         chan struct{}
	done            chan struct{} // closed at cleanup, so that a failed test does not hang
	hits, now, peak atomic.Int32
	answer          reply
}

func newBlockingServer(t *testing.T) *blockingServer {
	b := &blockingServer{proceed: make(chan struct{}), done: make(chan struct{}), answer: tokenReply("86399")}
	b.URL = newServer(t, b).URL
	t.Cleanup(func() { close(b.done) }) // runs before the server's Close
	return b
}

func (b *blockingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.hits.Add(1)
	n := b.now.Add(1)
	for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
	}
	select {
	case <-b.proceed:
	case <-b.done:
	case <-r.Context().Done():
	}
	// Before answering: the answer frees the client's slot, and the next
	// request must not be counted alongside this one.
	b.now.Add(-1)
	for k, v := range b.answer.header {
		w.Header().Set(k, v)
	}
	w.WriteHeader(b.answer.status)
	w.Write([]byte(b.answer.body)) //nolint:errcheck // the test server's reply
}

// TestTokenCap sends more token requests than the cap allows at once: the
// server never holds more than the cap, and the rest go out as slots free.
func TestTokenCap(t *testing.T) {
	const limit, extra = 3, 4
	srv := newBlockingServer(t)
	gate := imsgate.New(imsgate.Options{Limit: limit})
	client := gatedClient(srv.URL, gate)

	errs := make(chan error, limit+extra)
	for range limit + extra {
		go func() {
			_, err := client.Token(context.Background(), []string{"openid"})
			errs <- err
		}()
	}
	waitFor(t, "the cap to fill and the rest to queue", func() bool {
		if n := srv.now.Load(); n > limit {
			t.Fatalf("server holds %d requests at once, want at most %d", n, limit)
		}
		return srv.now.Load() == limit && gate.Waiting() == extra
	})
	for range limit + extra {
		select {
		case srv.proceed <- struct{}{}:
		case <-time.After(5 * time.Second):
			t.Fatal("a request never reached the server")
		}
	}
	for range limit + extra {
		if err := <-errs; err != nil {
			t.Errorf("Token() = %v", err)
		}
	}
	if got := srv.peak.Load(); got != limit {
		t.Errorf("server held %d requests at once, want %d", got, limit)
	}
	if got := srv.hits.Load(); got != limit+extra {
		t.Errorf("server saw %d requests, want %d", got, limit+extra)
	}
	if gate.InFlight() != 0 {
		t.Errorf("%d slots still taken", gate.InFlight())
	}
}

func TestTokenCapWaiterTimesOut(t *testing.T) {
	srv := newBlockingServer(t)
	gate := imsgate.New(imsgate.Options{Limit: 2})
	client := gatedClient(srv.URL, gate)
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := client.Token(context.Background(), []string{"openid"}); err != nil {
				t.Errorf("a request holding a slot failed: %v", err)
			}
		}()
	}
	waitFor(t, "both slots to be taken", func() bool { return srv.now.Load() == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := client.Token(ctx, []string{"openid"})
	close(srv.proceed)
	wg.Wait()

	var e *Error
	var busy *imsgate.BusyError
	if !errors.As(err, &e) || !errors.As(err, &busy) {
		t.Fatalf("err = %v, want an *Error holding an *imsgate.BusyError", err)
	}
	const want = "adobe ims token request: 2 requests to Adobe IMS are already in flight for this credential (max_concurrent_ims_requests is 2) and none finished within "
	if !strings.HasPrefix(err.Error(), want) || !strings.Contains(e.Hint, "max_concurrent_ims_requests") {
		t.Errorf("err = %q, want it to start %q and the hint to name the setting", err, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) || !e.Retryable() || e.Attempts != 0 || e.StatusCode != 0 {
		t.Errorf("deadline %v, retryable %v, attempts %d, status %d; want true, true, 0, 0",
			errors.Is(err, context.DeadlineExceeded), e.Retryable(), e.Attempts, e.StatusCode)
	}
	if got := srv.hits.Load(); got != 2 {
		t.Errorf("server saw %d requests, want 2: the waiter must send none", got)
	}
}

// TestTokenThrottle covers one call's answer to throttling: a window too
// long to wait out fails the call at once and is remembered; a short one is
// waited out inside the call.
func TestTokenThrottle(t *testing.T) {
	tests := []struct {
		name        string
		replies     []reply
		wantHits    int32
		wantStatus  int           // 0: success
		wantUntil   time.Duration // remembered window, from the start; 0: none
		wantGuessed bool
		minElapsed  time.Duration
	}{
		{"429 with Retry-After 20 fails at once", []reply{jsonReply(429, `{}`).with("Retry-After", "20"), tokenReply("60")}, 1, 429, 20 * time.Second, false, 0},
		{"503 with Retry-After 20 fails at once", []reply{jsonReply(503, `{}`).with("Retry-After", "20"), tokenReply("60")}, 1, 503, 20 * time.Second, false, 0},
		{"429 without Retry-After is a throttle of unknown length", []reply{jsonReply(429, `{}`), tokenReply("60")}, 1, 429, 30 * time.Second, true, 0},
		{"429 with Retry-After 2 is retried inside the call", []reply{jsonReply(429, `{}`).with("Retry-After", "2"), tokenReply("60")}, 2, 0, 2 * time.Second, false, 1900 * time.Millisecond},
		{"503 without Retry-After is retried and not remembered", []reply{jsonReply(503, `{}`), tokenReply("60")}, 2, 0, 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newFakeClock()
			gate := imsgate.New(imsgate.Options{Now: clk.Now})
			s := &script{replies: tt.replies}
			opts := fastOptions(&recorder{})
			opts.Gate = gate
			opts.MaxElapsed = 25 * time.Second // long enough that only the gate keeps a 20s Retry-After from being slept

			start := time.Now()
			_, err := NewClient(newServer(t, s).URL, testCreds, opts).Token(context.Background(), []string{"openid"})
			elapsed := time.Since(start)

			if got := s.hits.Load(); got != tt.wantHits {
				t.Errorf("server saw %d requests, want %d", got, tt.wantHits)
			}
			if elapsed < tt.minElapsed || tt.minElapsed == 0 && elapsed > time.Second {
				t.Errorf("took %s", elapsed)
			}
			var wantUntil time.Time
			if tt.wantUntil != 0 {
				wantUntil = clk.Now().Add(tt.wantUntil)
			}
			if got := gate.ThrottledUntil(); !got.Equal(wantUntil) {
				t.Errorf("ThrottledUntil = %s, want %s", got, wantUntil)
			}
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Token() = %v, want success", err)
				}
				return
			}
			var e *Error
			var terr *imsgate.ThrottledError
			if !errors.As(err, &e) || e.StatusCode != tt.wantStatus || !errors.As(err, &terr) {
				t.Fatalf("err = %v, want an *Error with HTTP %d holding an *imsgate.ThrottledError", err, tt.wantStatus)
			}
			if !terr.Until.Equal(wantUntil) || terr.Guessed != tt.wantGuessed {
				t.Errorf("throttled until %s (guessed %v), want %s (%v)", terr.Until, terr.Guessed, wantUntil, tt.wantGuessed)
			}
			if !strings.Contains(err.Error(), "Adobe IMS is throttling this credential") ||
				!strings.Contains(err.Error(), "will try again after "+wantUntil.Format(time.RFC3339)) {
				t.Errorf("err = %q, want it to say IMS is throttling and name %s", err, wantUntil.Format(time.RFC3339))
			}
		})
	}
}

// TestTokenThrottleWindow: once IMS has named a window, no request leaves
// until the clock passes it; then one does.
func TestTokenThrottleWindow(t *testing.T) {
	clk := newFakeClock()
	gate := imsgate.New(imsgate.Options{Now: clk.Now})
	s := &script{replies: []reply{jsonReply(429, `{}`).with("Retry-After", "20"), tokenReply("60")}}
	client := gatedClient(newServer(t, s).URL, gate)
	token := func() error {
		_, err := client.Token(context.Background(), []string{"openid"})
		return err
	}

	if err := token(); err == nil {
		t.Fatal("the 429 was not reported")
	}
	const until = "2025-05-01T12:00:20Z"
	// Up to 6s before the end: closer, a request would wait the rest out.
	for _, advance := range []time.Duration{0, 10 * time.Second, 4 * time.Second} {
		clk.Advance(advance)
		err := token()
		var e *Error
		if !errors.As(err, &e) || e.Attempts != 0 || e.StatusCode != 0 || !e.Retryable() {
			t.Fatalf("at +%s: err = %v, want an *Error for a request not sent, retryable", advance, err)
		}
		want := "adobe ims token request: Adobe IMS is throttling this credential; the plugin will try again after " + until + ": "
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("err = %q, want it to start %q", err, want)
		}
		if err := client.Invalidate(context.Background(), testToken); err == nil || !strings.Contains(err.Error(), until) {
			t.Errorf("Invalidate() = %v, want it held back until %s", err, until)
		}
		if got := s.hits.Load(); got != 1 {
			t.Fatalf("at +%s: server saw %d requests, want only the first", advance, got)
		}
	}
	clk.Advance(6 * time.Second)
	if err := token(); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	if got := s.hits.Load(); got != 2 || !gate.ThrottledUntil().IsZero() {
		t.Errorf("server saw %d requests, throttled until %s; want 2, none", got, gate.ThrottledUntil())
	}
}

// TestTokenUnknownThrottleBacksOff: 429s without Retry-After hold requests
// back 30s, then 60s; a success resets that to 30s.
func TestTokenUnknownThrottleBacksOff(t *testing.T) {
	clk := newFakeClock()
	gate := imsgate.New(imsgate.Options{Now: clk.Now})
	throttled := jsonReply(429, `{"error":"too_many_requests"}`)
	s := &script{replies: []reply{throttled, throttled, tokenReply("60"), throttled}}
	client := gatedClient(newServer(t, s).URL, gate)

	steps := []struct {
		advance   time.Duration
		wantHits  int32
		wantOK    bool
		wantUntil time.Duration // from now; 0: none
	}{
		{0, 1, false, 30 * time.Second},
		{20 * time.Second, 1, false, 10 * time.Second}, // held back
		{10 * time.Second, 2, false, 60 * time.Second}, // doubled
		{60 * time.Second, 3, true, 0},
		{0, 4, false, 30 * time.Second}, // reset by the success
	}
	for i, st := range steps {
		clk.Advance(st.advance)
		_, err := client.Token(context.Background(), []string{"openid"})
		if (err == nil) != st.wantOK {
			t.Fatalf("step %d: err = %v, want success %v", i, err, st.wantOK)
		}
		if got := s.hits.Load(); got != st.wantHits {
			t.Fatalf("step %d: server saw %d requests, want %d", i, got, st.wantHits)
		}
		var want time.Time
		if st.wantUntil != 0 {
			want = clk.Now().Add(st.wantUntil)
		}
		if got := gate.ThrottledUntil(); !got.Equal(want) {
			t.Fatalf("step %d: throttled until %s, want %s", i, got, want)
		}
	}
}

// TestTokenStopsRetryingWhenThrottledElsewhere: a call about to retry
// learns that another call has met a long throttle, and gives up at once.
func TestTokenStopsRetryingWhenThrottledElsewhere(t *testing.T) {
	gate := imsgate.New(imsgate.Options{Now: newFakeClock().Now})
	s := &script{replies: []reply{jsonReply(503, `{}`), tokenReply("60")}}
	s.check = func(*http.Request) { _ = gate.Throttle(20 * time.Second) } // as another call's 429 would
	_, err := gatedClient(newServer(t, s).URL, gate).Token(context.Background(), []string{"openid"})

	var e *Error
	var terr *imsgate.ThrottledError
	if !errors.As(err, &e) || e.StatusCode != 503 || !errors.As(err, &terr) {
		t.Fatalf("err = %v, want the 503 holding an *imsgate.ThrottledError", err)
	}
	if got := s.hits.Load(); got != 1 {
		t.Errorf("server saw %d requests, want 1", got)
	}
}

// TestInvalidateGate: a revocation respects a throttle but takes no slot.
func TestInvalidateGate(t *testing.T) {
	t.Run("not capped", func(t *testing.T) {
		gate := imsgate.New(imsgate.Options{Limit: 1})
		release, err := gate.Enter(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		s := &script{replies: []reply{{status: 200}}}
		if err := gatedClient(newServer(t, s).URL, gate).Invalidate(context.Background(), testToken); err != nil || s.hits.Load() != 1 {
			t.Errorf("Invalidate() = %v after %d requests; want it sent despite the full cap", err, s.hits.Load())
		}
	})
	t.Run("throttle remembered", func(t *testing.T) {
		clk := newFakeClock()
		gate := imsgate.New(imsgate.Options{Now: clk.Now})
		s := &script{replies: []reply{jsonReply(429, `{}`).with("Retry-After", "60"), {status: 200}}}
		client := gatedClient(newServer(t, s).URL, gate)
		for range 2 {
			err := client.Invalidate(context.Background(), testToken)
			var terr *imsgate.ThrottledError
			if !errors.As(err, &terr) || !terr.Until.Equal(clk.Now().Add(time.Minute)) {
				t.Fatalf("Invalidate() = %v, want it throttled for a minute", err)
			}
		}
		if got := s.hits.Load(); got != 1 {
			t.Errorf("server saw %d requests, want 1", got)
		}
	})
}

// TestHintsAgreeWithRetries: a status the client does not retry must not
// have a hint that tells the operator to retry.
func TestHintsAgreeWithRetries(t *testing.T) {
	for _, status := range []int{429, 500, 501, 502, 503, 504, 505} {
		for _, op := range []string{OpToken, OpInvalidate, OpListSecrets} {
			h := hint(&Error{Op: op, StatusCode: status})
			retried := idempotent(&http.Response{StatusCode: status}, nil)
			if says := strings.Contains(h, "retry"); says != retried {
				t.Errorf("%s HTTP %d: retried %v, but the hint %q says retry: %v", op, status, retried, h, says)
			}
		}
	}
	if h := hint(&Error{Op: OpToken, StatusCode: 501}); !strings.Contains(h, "ims_url") {
		t.Errorf("501 hint = %q, want it to point at ims_url", h)
	}
}
