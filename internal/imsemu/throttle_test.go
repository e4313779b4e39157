package imsemu

import (
	"context"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// throttleStep is one token request of TestRateLimit, made after moving the clock.
type throttleStep struct {
	advance  time.Duration
	clientID string // default testClientID
	secret   string // default testSecret
	status   int
	// retryAfter is the Retry-After header wanted; "" wants none.
	retryAfter string
}

func TestRateLimit(t *testing.T) {
	ok := throttleStep{status: 200}
	tests := []struct {
		name                       string
		n                          int
		per, retryAfter            time.Duration
		steps                      []throttleStep
		throttled, issued, refused int
	}{
		{
			name: "computed Retry-After, sliding window", n: 2, per: time.Minute,
			steps: []throttleStep{
				ok,                                       // t=0
				{advance: 10 * time.Second, status: 200}, // t=10
				{advance: 5 * time.Second, status: 429, retryAfter: "45"},         // t=15: room at t=60
				{advance: 44500 * time.Millisecond, status: 429, retryAfter: "1"}, // 0.5 s left: rounded up
				{advance: 500 * time.Millisecond, status: 200},                    // t=60: the t=0 request left
				{status: 429, retryAfter: "10"},                                   // room again at t=70
				{advance: 10 * time.Second, status: 200},                          // t=70
			},
			throttled: 3, issued: 4,
		},
		{
			name: "fixed Retry-After", n: 1, per: time.Minute, retryAfter: 30 * time.Second,
			steps: []throttleStep{
				ok,
				{status: 429, retryAfter: "30"},
				{advance: 59 * time.Second, status: 429, retryAfter: "30"},
				{advance: time.Second, status: 200},
			},
			throttled: 2, issued: 2,
		},
		{
			name: "fixed Retry-After in whole seconds, rounded up", n: 1, per: time.Minute, retryAfter: 1500 * time.Millisecond,
			steps:     []throttleStep{ok, {status: 429, retryAfter: "2"}},
			throttled: 1, issued: 1,
		},
		{
			name: "429 without Retry-After", n: 1, per: time.Hour, retryAfter: NoRetryAfter,
			steps: []throttleStep{
				ok,
				{status: 429},
				{advance: time.Hour - time.Millisecond, status: 429},
				{advance: time.Millisecond, status: 200},
			},
			throttled: 2, issued: 2,
		},
		{
			name: "sub-second window: Retry-After at least 1", n: 1, per: 300 * time.Millisecond,
			steps:     []throttleStep{ok, {advance: 100 * time.Millisecond, status: 429, retryAfter: "1"}, {advance: 200 * time.Millisecond, status: 200}},
			throttled: 1, issued: 2,
		},
		{
			name: "refused requests count, throttled ones do not", n: 2, per: time.Minute,
			steps: []throttleStep{
				{secret: "nope", status: 400},
				ok,
				{advance: 30 * time.Second, status: 429, retryAfter: "30"},
				{status: 429, retryAfter: "30"},
				{advance: 30 * time.Second, status: 200}, // throttled requests left no trace
			},
			throttled: 2, issued: 2, refused: 1,
		},
		{
			name: "per client", n: 1, per: time.Minute,
			steps: []throttleStep{
				ok,
				{clientID: "other-client", status: 400}, // not throttled by testClientID's request
				{clientID: "other-client", status: 429, retryAfter: "60"},
				{advance: time.Second, status: 429, retryAfter: "59"},
			},
			throttled: 2, issued: 1, refused: 1,
		},
		{
			name: "no limit", n: 0, per: time.Minute,
			steps:  []throttleStep{ok, ok, ok, ok},
			issued: 4,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.emu.SetRateLimit(tc.n, tc.per, tc.retryAfter)
			for i, s := range tc.steps {
				h.clock.Advance(s.advance)
				form := tokenForm(orDefault(s.secret, testSecret), "openid")
				form.Set("client_id", orDefault(s.clientID, testClientID))
				r := h.postForm(pathToken, form)
				if r.status != s.status {
					t.Fatalf("step %d: %d %s, want %d", i, r.status, r.body, s.status)
				}
				got, present := r.header.Get("Retry-After"), len(r.header.Values("Retry-After")) > 0
				if got != s.retryAfter || (s.retryAfter == "" && present) {
					t.Errorf("step %d: Retry-After %q (present %v), want %q", i, got, present, s.retryAfter)
				}
				if s.status == http.StatusTooManyRequests {
					body := r.jsonMap(t)
					if len(body) != 2 || body["error"] != throttledCode || !nonEmpty(body, "error_description") {
						t.Errorf("step %d: 429 body %s, want the IMS error body", i, r.body)
					}
				}
			}
			got := h.emu.Stats()
			if got.TokenRequests != len(tc.steps) || got.TokenThrottled != tc.throttled ||
				got.TokensIssued != tc.issued || got.TokenErrors != tc.refused {
				t.Errorf("stats %+v, want %d requests, %d throttled, %d issued, %d refused",
					got, len(tc.steps), tc.throttled, tc.issued, tc.refused)
			}
		})
	}
}

func TestSetRateLimit(t *testing.T) {
	tests := []struct {
		name            string
		n               int
		per, retryAfter time.Duration
		want            RateLimit
		wantString      string
	}{
		{"computed", 10, time.Minute, 0, RateLimit{10, time.Minute, 0}, "10/1m0s"},
		{"fixed, rounded up", 10, time.Minute, 2100 * time.Millisecond, RateLimit{10, time.Minute, 3 * time.Second}, "10/1m0s"},
		{"none", 1, time.Second, NoRetryAfter, RateLimit{1, time.Second, NoRetryAfter}, "1/1s"},
		{"any negative means none", 1, time.Second, -time.Hour, RateLimit{1, time.Second, NoRetryAfter}, "1/1s"},
		{"n 0 is off", 0, time.Minute, 5 * time.Second, RateLimit{}, "off"},
		{"negative n is off", -3, time.Minute, 0, RateLimit{}, "off"},
		{"no window is off", 5, 0, 0, RateLimit{}, "off"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := New(Config{ClientID: "c", ClientSecret: "s"})
			e.SetRateLimit(tc.n, tc.per, tc.retryAfter)
			if got := e.RateLimit(); got != tc.want || got.String() != tc.wantString || got.Enabled() != (tc.want.Requests > 0) {
				t.Errorf("RateLimit() = %+v (%s), want %+v (%s)", got, got, tc.want, tc.wantString)
			}
		})
	}
}

func TestSetRateLimitStartsAFreshWindow(t *testing.T) {
	h := newHarness(t)
	h.emu.SetRateLimit(1, time.Hour, 0)
	h.mint(testSecret, "openid")
	if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.status != http.StatusTooManyRequests {
		t.Fatalf("second request: %d, want 429", r.status)
	}
	h.emu.SetRateLimit(1, time.Hour, 0)
	h.mint(testSecret, "openid")
}

func TestFaultsBypassTheRateLimit(t *testing.T) {
	h := newHarness(t)
	h.emu.SetRateLimit(1, time.Hour, 0)
	h.emu.SetFault(&Fault{Endpoint: EndpointToken, Kind: KindStatus, Status: 503, Times: 2})
	for range 2 {
		if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.status != http.StatusServiceUnavailable {
			t.Fatalf("faulted request: %d, want 503", r.status)
		}
	}
	h.mint(testSecret, "openid") // the faulted requests took no room in the window
	if got := h.emu.Stats(); got.FaultsServed != 2 || got.TokenThrottled != 0 {
		t.Errorf("stats %+v", got)
	}
}

func TestTokenInFlightPeak(t *testing.T) {
	tests := []struct {
		name       string
		concurrent int
		// resetWhileHeld calls ResetStats while the requests are held in flight.
		resetWhileHeld bool
		// fault answers the requests with an injected 503 once the latency wait is over.
		fault bool
	}{
		{name: "one", concurrent: 1},
		{name: "three", concurrent: 3},
		{name: "eight", concurrent: 8},
		{name: "reset while in flight keeps the current count as peak", concurrent: 4, resetWhileHeld: true},
		{name: "faulted requests count too", concurrent: 5, fault: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			entered := make(chan struct{})
			release := make(chan struct{})
			// The latency seam: hold every token request inside the emulator until released.
			h.emu.sleep = func(ctx context.Context, d time.Duration) bool {
				entered <- struct{}{}
				select {
				case <-release:
					return true
				case <-ctx.Done():
					return false
				}
			}
			h.emu.SetLatency(time.Hour) // after setting sleep: the mutex orders the two
			if tc.fault {
				h.emu.SetFault(&Fault{Endpoint: EndpointToken, Kind: KindStatus, Status: 503})
			}

			var wg sync.WaitGroup
			for range tc.concurrent {
				wg.Go(func() {
					resp, err := h.srv.Client().PostForm(h.srv.URL+pathToken, tokenForm(testSecret, "openid"))
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
				})
			}
			for range tc.concurrent {
				<-entered
			}
			if tc.resetWhileHeld {
				h.emu.ResetStats()
			}
			if got := h.emu.Stats(); got.TokenInFlight != tc.concurrent || got.TokenInFlightPeak != tc.concurrent {
				t.Errorf("while held: in flight %d, peak %d, want %d", got.TokenInFlight, got.TokenInFlightPeak, tc.concurrent)
			}
			close(release)
			wg.Wait()
			// A handler leaves the count before its answer is sent, so nothing is left.
			if got := h.emu.Stats(); got.TokenInFlight != 0 || got.TokenInFlightPeak != tc.concurrent {
				t.Errorf("after: in flight %d, peak %d, want 0 and %d", got.TokenInFlight, got.TokenInFlightPeak, tc.concurrent)
			}
			if got := h.emu.Stats(); tc.fault && got.FaultsServed != tc.concurrent {
				t.Errorf("FaultsServed %d, want %d", got.FaultsServed, tc.concurrent)
			}

			// One at a time never raises the peak above 1.
			h.emu.SetLatency(0)
			h.emu.SetFault(nil)
			h.emu.ResetStats()
			h.mint(testSecret, "openid")
			h.mint(testSecret, "openid")
			if got := h.emu.Stats(); got.TokenInFlightPeak != 1 || got.TokenInFlight != 0 {
				t.Errorf("sequential: in flight %d, peak %d, want 0 and 1", got.TokenInFlight, got.TokenInFlightPeak)
			}
		})
	}
}

func TestTokenInFlightCountsOnlyTokenRequests(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, "openid")
	h.postForm(pathValidate, validateForm(token))
	h.postForm(pathInvalidate, invalidateForm(token, testSecret))
	if got := h.emu.Stats(); got.TokenInFlightPeak != 1 || got.TokenInFlight != 0 {
		t.Errorf("in flight %d, peak %d, want 0 and 1", got.TokenInFlight, got.TokenInFlightPeak)
	}
}

func TestWrongSecretStatus(t *testing.T) {
	tests := []struct {
		name   string
		set    []int // statuses set in turn; none leaves the default
		path   string
		edit   func(url.Values)
		status int
		code   string
	}{
		{name: "default on token", path: pathToken, edit: wrongSecret, status: 400, code: "invalid_client"},
		{name: "401 on token", set: []int{401}, path: pathToken, edit: wrongSecret, status: 401, code: "invalid_client"},
		{name: "back to 400 on token", set: []int{401, 400}, path: pathToken, edit: wrongSecret, status: 400, code: "invalid_client"},
		{name: "401 on invalidate", set: []int{401}, path: pathInvalidate, edit: wrongSecret, status: 401, code: "invalid_client"},
		{name: "401 spares an unknown client", set: []int{401}, path: pathToken,
			edit: func(f url.Values) { f.Set("client_id", "someone-else") }, status: 400, code: "invalid_client"},
		{name: "401 spares a good secret", set: []int{401}, path: pathToken, edit: func(url.Values) {}, status: 200},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			for _, status := range tc.set {
				if err := h.emu.SetWrongSecretStatus(status); err != nil {
					t.Fatal(err)
				}
			}
			form := tokenForm(testSecret, "openid")
			if tc.path == pathInvalidate {
				form = invalidateForm(h.mint(testSecret, "openid"), testSecret)
			}
			tc.edit(form)
			r := h.postForm(tc.path, form)
			if r.status != tc.status {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tc.status)
			}
			if tc.code != "" {
				if body := r.jsonMap(t); body["error"] != tc.code || !nonEmpty(body, "error_description") {
					t.Errorf("body %s, want error %s", r.body, tc.code)
				}
			}
		})
	}
}

func wrongSecret(f url.Values) { f.Set("client_secret", "nope") }

func TestSetWrongSecretStatusRefusesOthers(t *testing.T) {
	for _, status := range []int{0, 200, 403, 429, 500} {
		e := New(Config{ClientID: "c", ClientSecret: "s"})
		if err := e.SetWrongSecretStatus(status); err == nil {
			t.Errorf("SetWrongSecretStatus(%d) accepted", status)
		}
		if got := e.WrongSecretStatus(); got != 400 {
			t.Errorf("after refusing %d the status is %d, want 400", status, got)
		}
	}
}
