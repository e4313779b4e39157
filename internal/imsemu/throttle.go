package imsemu

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// Throttling of the token endpoint.
//
// adobe-ims.md: "Adobe can throttle your integration if it generates too many access
// tokens", answering 429 with Retry-After; no numeric limit is published, nothing
// documents how long a throttle lasts, nor that a 429 always carries Retry-After. So the
// emulator's limit is a knob, off by default, and everything below about how it counts
// is ours, not documented by Adobe:
//
//   - the limit is per client: requests are counted by the client_id they name (as sent,
//     known to the emulator or not); a request that names none is never throttled;
//   - the window slides: a request is admitted when fewer than Requests requests of the
//     same client were admitted during the Per before it, by the Config clock;
//   - every admitted request counts, whatever its outcome (a wrong secret or scope
//     included); throttled requests do not count, so a client that keeps calling
//     while throttled is served again as soon as the window has room;
//   - requests answered by an injected Fault never reach the limit and do not count.
//
// A throttled request gets 429 with the documented IMS error body and, unless the
// limit says otherwise, Retry-After: the whole seconds (rounded up, at least 1) until
// the window has room again.

// NoRetryAfter, as the retryAfter of SetRateLimit, makes throttled answers carry no
// Retry-After header, which adobe-ims.md says nothing guarantees.
const NoRetryAfter time.Duration = -1

// Error code and description of a throttled token request. Adobe documents neither for
// a 429; the code is the emulator's generic one for 429 (see Fault.ErrorCode).
const (
	throttledCode        = "temporarily_unavailable"
	throttledDescription = "too many token requests for this client_id; retry later"
)

// RateLimit is the per-client limit on the token endpoint; see SetRateLimit.
type RateLimit struct {
	// Requests admitted per client within any window of length Per; 0 means no limit.
	Requests int
	Per      time.Duration
	// RetryAfter: 0 sends the computed wait, a positive value that fixed value (whole
	// seconds, rounded up), NoRetryAfter no header at all.
	RetryAfter time.Duration
}

// Enabled reports whether the limit throttles anything.
func (l RateLimit) Enabled() bool { return l.Requests > 0 && l.Per > 0 }

// String renders the limit the way the -rate-limit flag of cmd/ims-emulator takes it.
func (l RateLimit) String() string {
	if !l.Enabled() {
		return "off"
	}
	return fmt.Sprintf("%d/%s", l.Requests, l.Per)
}

// SetRateLimit limits every client to n token requests per sliding window of length
// per (by the Config clock). n <= 0 or per <= 0 removes the limit. retryAfter chooses
// the Retry-After header of the 429: 0 for the seconds until the window has room, a
// positive duration for that fixed value (whole seconds, rounded up), NoRetryAfter (or
// any negative value) for none. Every call starts from an empty window.
func (e *Emulator) SetRateLimit(n int, per time.Duration, retryAfter time.Duration) {
	l := RateLimit{Requests: n, Per: per, RetryAfter: retryAfter}
	switch {
	case !l.Enabled():
		l = RateLimit{}
	case retryAfter < 0:
		l.RetryAfter = NoRetryAfter
	case retryAfter > 0:
		l.RetryAfter = time.Duration(ceilSeconds(retryAfter)) * time.Second
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.rateLimit = l
	e.admitted = make(map[string][]time.Time)
}

// RateLimit returns the limit in force; Requests is 0 when there is none.
func (e *Emulator) RateLimit() RateLimit {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.rateLimit
}

// throttleLocked admits a token request of clientID, or returns the 429 to answer.
func (e *Emulator) throttleLocked(clientID string) *refusal {
	l := e.rateLimit
	if !l.Enabled() || clientID == "" {
		return nil
	}
	now := e.now()
	window := e.admitted[clientID]
	// Forget admissions that left the window: t + Per <= now.
	i := 0
	for i < len(window) && !window[i].Add(l.Per).After(now) {
		i++
	}
	window = window[i:]
	if len(window) < l.Requests {
		e.admitted[clientID] = append(window, now)
		return nil
	}
	e.admitted[clientID] = window
	rf := refuse(http.StatusTooManyRequests, throttledCode, throttledDescription)
	switch {
	case l.RetryAfter == 0:
		rf.retryAfter = strconv.FormatInt(max(1, ceilSeconds(window[0].Add(l.Per).Sub(now))), 10)
	case l.RetryAfter > 0:
		rf.retryAfter = strconv.FormatInt(ceilSeconds(l.RetryAfter), 10)
	}
	return rf
}

// ceilSeconds is d in whole seconds, rounded up.
func ceilSeconds(d time.Duration) int64 {
	return int64((d + time.Second - 1) / time.Second)
}

// enterToken and exitToken bracket a token request, latency wait and faults included,
// so that Stats shows how many were in flight at once.
func (e *Emulator) enterToken() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inFlight++
	e.stats.TokenInFlightPeak = max(e.stats.TokenInFlightPeak, e.inFlight)
}

func (e *Emulator) exitToken() {
	e.mu.Lock()
	e.inFlight--
	e.mu.Unlock()
}

// sleep waits d in real time; it reports false when ctx ends first. It is the default
// of Emulator.sleep, which tests replace.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// SetWrongSecretStatus chooses the HTTP status of the invalid_client answer to a wrong
// client_secret (on the token and invalidate endpoints): 400, the default, as Adobe's
// asset-compute client handles it, or 401, as Adobe's User Management API guide
// documents it. adobe-ims.md asks clients to treat both alike. An unknown client_id
// keeps its documented 400.
func (e *Emulator) SetWrongSecretStatus(status int) error {
	if status != http.StatusBadRequest && status != http.StatusUnauthorized {
		return fmt.Errorf("wrong secret status %d: want 400 or 401", status)
	}
	e.mu.Lock()
	e.wrongSecretStatus = status
	e.mu.Unlock()
	return nil
}

// WrongSecretStatus returns the status a wrong client_secret gets: 400 or 401.
func (e *Emulator) WrongSecretStatus() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.wrongSecretStatus
}
