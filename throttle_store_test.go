package adobeims

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// throttleEnv is a configured node with a cold role, whose first read IMS
// throttles for retryAfter; it returns the window info shows.
func throttleEnv(t *testing.T, retryAfter string) (*rotateEnv, string) {
	t.Helper()
	e := newRotateEnv(t, rotateOptions{})
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/cold", map[string]any{"scopes": "openid,firefly_api"}))
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: retryAfter})
	resp, err := e.read("creds/cold")
	e.mustFail(resp, err, "throttling this credential")
	e.emu.SetFault(nil) // IMS would answer now; the plugin must not ask
	shown, _ := e.mustOK(e.read("info")).Data[keyThrottledUntil].(string)
	if shown == "" {
		t.Fatal("info shows no throttle after IMS throttled the credential")
	}
	return e, shown
}

func (e *rotateEnv) storedThrottle() *persistedThrottle {
	e.t.Helper()
	p, err := getThrottle(context.Background(), e.mem)
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// TestRestartRespectsTheThrottle: a node restarted (or a plugin reloaded,
// or a new leader) inside a throttle window sends nothing to IMS until the
// window ends, and shows the same window; then it mints as usual.
func TestRestartRespectsTheThrottle(t *testing.T) {
	e, shown := throttleEnv(t, "60")
	p := e.storedThrottle()
	if p == nil || p.ClientID != testClientID || p.IMSURL != e.srv.URL || p.Until.Format(time.RFC3339) > shown {
		t.Fatalf("stored throttle %+v, want one for this credential ending by %s", p, shown)
	}
	if logs := e.logs.String(); strings.Contains(logs, "could not store the throttle window") {
		t.Errorf("storing the throttle window logged a failure:\n%s", logs)
	}
	requests := e.emu.Stats().TokenRequests

	e.restart()
	if got := e.mustOK(e.read("info")).Data[keyThrottledUntil]; got != shown {
		t.Errorf("after a restart info shows throttled_until %v, want %s", got, shown)
	}
	for _, path := range []string{"creds/cold", "creds", "creds/cold"} {
		resp, err := e.read(path)
		e.mustFail(resp, err, "throttling this credential", shown)
	}
	if n := e.emu.Stats().TokenRequests - requests; n != 0 {
		t.Fatalf("the restarted node sent %d token requests inside the throttle window", n)
	}

	e.clock.Advance(61 * time.Second)
	e.creds("creds/cold")
	if n := e.emu.Stats().TokenRequests - requests; n != 1 {
		t.Errorf("%d token requests after the window, want 1", n)
	}
}

// TestStoredThrottleOfAnotherCredentialIsIgnored: IMS throttles a client at
// a host; a window stored for another client changes nothing.
func TestStoredThrottleOfAnotherCredentialIsIgnored(t *testing.T) {
	e, _ := throttleEnv(t, "600")
	p := e.storedThrottle()
	p.ClientID = "another-client"
	entry, err := logical.StorageEntryJSON(throttleStorageKey, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.mem.Put(context.Background(), entry); err != nil {
		t.Fatal(err)
	}
	requests := e.emu.Stats().TokenRequests

	e.restart()
	if got := e.mustOK(e.read("info")).Data[keyThrottledUntil]; got != "" {
		t.Errorf("info shows throttled_until %v from another client's window", got)
	}
	e.creds("creds/cold")
	if n := e.emu.Stats().TokenRequests - requests; n != 1 {
		t.Errorf("%d token requests, want 1: another client's window held this one back", n)
	}
}

// TestStandbyLearnsTheThrottle: a performance standby hears of the window
// the active node met (Invalidate), so it shows it and, should it become
// the active node, respects it.
func TestStandbyLearnsTheThrottle(t *testing.T) {
	e, shown := throttleEnv(t, "60")
	standby := newRotateEnv(t, rotateOptions{system: &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}})
	standby.testEnv.emu, standby.testEnv.srv = e.emu, e.srv
	standby.mem, standby.storage = e.mem, e.storage
	standby.clock = e.clock
	standby.start()
	if got := standby.mustOK(standby.read("info")).Data[keyThrottledUntil]; got != shown {
		t.Fatalf("the standby shows throttled_until %v once it connects, want %s", got, shown)
	}

	// The window moves later on the active node; the standby follows.
	e.clock.Advance(50 * time.Second)
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "600"})
	e.clock.Advance(11 * time.Second)
	resp, err := e.read("creds/cold")
	e.mustFail(resp, err, "throttling this credential")
	later, _ := e.mustOK(e.read("info")).Data[keyThrottledUntil].(string)
	if later <= shown {
		t.Fatalf("the window did not move: %s, before %s", later, shown)
	}
	standby.b.invalidate(context.Background(), throttleStorageKey)
	if got := standby.mustOK(standby.read("info")).Data[keyThrottledUntil]; got != later {
		t.Errorf("the standby shows throttled_until %v, want the active node's %s", got, later)
	}
}

// TestOnlyLongThrottlesAreStoredAndDeleteForgetsThem: a window a read waits
// out writes nothing; a config delete deletes the stored window.
func TestOnlyLongThrottlesAreStoredAndDeleteForgetsThem(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(map[string]any{"verify": false})
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "1", Times: 1})
	e.creds("creds") // waits the second out, then mints
	if p := e.storedThrottle(); p != nil {
		t.Fatalf("a one-second throttle was stored: %+v", p)
	}

	e.mustOK(e.write("roles/cold", map[string]any{"scopes": "openid,firefly_api"}))
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "60"})
	resp, err := e.read("creds/cold")
	e.mustFail(resp, err, "throttling this credential")
	if e.storedThrottle() == nil {
		t.Fatal("a one-minute throttle was not stored")
	}
	if _, err := e.request(logical.DeleteOperation, "config", nil); err != nil {
		t.Fatal(err)
	}
	if p := e.storedThrottle(); p != nil {
		t.Fatalf("the throttle window outlived the config: %+v", p)
	}
}
