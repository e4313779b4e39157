package adobeims

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// TestAThrottleOfThePreviousHostDoesNotHoldBackTheNewOne: IMS throttles a
// client at a host. A token request sent to the previous host is answered
// 429 (Retry-After 60) only after a config write has moved the engine to
// another host: that read fails, but the new host is not throttled, neither
// in memory (info, the next read) nor in storage (a restart).
func TestAThrottleOfThePreviousHostDoesNotHoldBackTheNewOne(t *testing.T) {
	otherEmu := newTestEmulator()
	other := httptest.NewServer(otherEmu)
	t.Cleanup(other.Close)

	var e *testEnv
	var moved sync.Once
	e = newTestEnvWith(t, envOptions{afterIMS: func(req *http.Request) {
		if strings.HasSuffix(req.URL.Path, "/ims/token/v3") && !strings.HasPrefix(other.URL, "http://"+req.URL.Host) {
			moved.Do(func() {
				e.mustOK(e.write("config", map[string]any{"ims_url": other.URL, "client_secret": testClientSecret, "verify": false}))
			})
		}
	}})
	e.configure(map[string]any{"verify": false})
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "60", Times: 1})

	resp, err := e.read("creds")
	e.mustFail(resp, err, "throttling this credential")
	if shown := e.mustOK(e.read("info")).Data[keyThrottledUntil]; shown != "" {
		t.Errorf("info shows throttled_until %v for the new host, which never throttled", shown)
	}
	if p, err := getThrottle(t.Context(), e.storage); err != nil || p != nil {
		t.Errorf("stored throttle window %+v (%v), want none: only the previous host throttled", p, err)
	}
	e.creds("creds")
	if n := otherEmu.Stats().TokenRequests; n != 1 {
		t.Errorf("the new host received %d token requests, want 1", n)
	}
}
