package adobeims

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// TestThrottledCredentialFallsSilent: once IMS answers 429 with a
// Retry-After longer than a read can wait, the read fails at once naming
// when the plugin tries again; until then no token request leaves the
// plugin (cold shared reads, dedicated reads), shared reads with a valid
// token keep being served, and info shows throttled_until.
func TestThrottledCredentialFallsSilent(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/warm", map[string]any{"scopes": "openid,AdobeID"}))
	e.mustOK(e.write("roles/cold", map[string]any{"scopes": "openid,firefly_api"}))
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	warm := e.creds("creds/warm").Data[keyAccessToken]

	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "20"})
	resp, err := e.read("creds/cold")
	until := e.clock.Now().Add(20 * time.Second).UTC()
	msg := e.mustFail(resp, err, "throttling this credential", "try again after")
	if c, ok := err.(logical.HTTPCodedError); !ok || c.Code() != http.StatusTooManyRequests { //nolint:errorlint // Vault reads the code with a plain type assertion
		t.Fatalf("want a 429, got %T %v", err, err)
	}
	shown := e.mustOK(e.read("info")).Data[keyThrottledUntil].(string)
	at, perr := time.Parse(time.RFC3339, shown)
	if perr != nil || at.Before(until.Add(-time.Second)) || at.After(until.Add(2*time.Second)) {
		t.Fatalf("info throttled_until %q, want about %s", shown, until.Format(time.RFC3339))
	}
	if !strings.Contains(msg, shown) {
		t.Errorf("the error %q does not name the time info shows, %s", msg, shown)
	}

	e.emu.SetFault(nil) // IMS would answer now, but the plugin must not ask
	requests := e.emu.Stats().TokenRequests
	for _, path := range []string{"creds/cold", "creds/d", "creds/cold"} {
		resp, err := e.read(path)
		e.mustFail(resp, err, "throttling this credential")
	}
	if n := e.emu.Stats().TokenRequests - requests; n != 0 {
		t.Fatalf("%d token requests left the plugin while IMS throttles it", n)
	}
	if got := e.creds("creds/warm").Data[keyAccessToken]; got != warm {
		t.Error("a shared read with a valid token was not served while throttled")
	}

	e.clock.Advance(21 * time.Second)
	e.creds("creds/cold")
	e.creds("creds/d")
	if n := e.emu.Stats().TokenRequests - requests; n != 2 {
		t.Errorf("%d token requests after the throttle ended, want 2", n)
	}
	if shown := e.mustOK(e.read("info")).Data[keyThrottledUntil]; shown != "" {
		t.Errorf("info throttled_until %v after it passed", shown)
	}
}

// TestMaxConcurrentIMSRequests is a config field with bounds, shown on read.
func TestMaxConcurrentIMSRequests(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	for _, bad := range []int{0, 65, -1} {
		resp, err := e.write("config", map[string]any{keyMaxConcurrent: bad})
		e.mustFail(resp, err, "max_concurrent_ims_requests", "1 to 64")
	}
	e.mustOK(e.write("config", map[string]any{keyMaxConcurrent: 2}))
	if got := e.mustOK(e.read("config")).Data[keyMaxConcurrent]; got != 2 {
		t.Fatalf("config shows max_concurrent_ims_requests %v", got)
	}
	if got := e.b.gate.Limit(); got != 2 {
		t.Errorf("the gate's limit is %d, want 2", got)
	}
}

// TestRefreshWaitsOutAThrottle: a background refresh due while IMS throttles
// the credential sends nothing, whether the periodic function or a reader
// past the refresh point starts it, and the token it would replace keeps
// being served until its safe end.
//
// The periodic refresh runs first: a reader past the refresh point starts a
// refresh of its own, whose recorded failure would make the periodic one wait
// out its back-off, and which of the two ran first would then decide what
// periodic returns.
func TestRefreshWaitsOutAThrottle(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/cold", map[string]any{"scopes": "openid,firefly_api"}))
	warm := e.creds("creds").Data[keyAccessToken]
	e.clock.Advance(17 * time.Hour) // past the refresh point, before the safe end

	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "60", Times: 1})
	resp, err := e.read("creds/cold")
	e.mustFail(resp, err, "throttling this credential")
	requests := e.emu.Stats().TokenRequests

	if err := e.periodic(); err == nil || !strings.Contains(err.Error(), "throttling this credential") {
		t.Errorf("periodic refresh while throttled = %v, want the throttle error", err)
	}
	// The token being replaced is the one cached scope set with a token.
	failures := func() int {
		for _, s := range e.b.cache.States() {
			if !s.MintedAt.IsZero() {
				return s.Failures
			}
		}
		return 0
	}
	before := failures()
	if before == 0 {
		t.Fatal("the failed periodic refresh left no failure on the token's state")
	}

	// Past the back-off, within the throttle: a reader past the refresh
	// point starts a refresh, which the throttle stops before IMS.
	e.clock.Advance(10 * time.Second)
	if got := e.creds("creds").Data[keyAccessToken]; got != warm {
		t.Error("the token due for replacement was not served while throttled")
	}
	waitFor(t, "the reader-started refresh to fail", func() bool { return failures() > before })
	if n := e.emu.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("%d token requests left the plugin while IMS throttles it", n)
	}
}
