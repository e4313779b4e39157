package adobeims

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

func (e *testEnv) periodic() error {
	return e.b.periodic(context.Background(), &logical.Request{Storage: e.storage})
}

func TestPeriodicRefreshReplacesTokenBeforeReadersNeedIt(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	first := e.creds("creds").Data["access_token"]

	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if got := e.emu.Stats().TokenRequests; got != 1 {
		t.Fatalf("refresh before the refresh point made IMS requests: %d", got)
	}

	e.clock.Advance(17 * time.Hour)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if got := e.emu.Stats().TokenRequests; got != 2 {
		t.Fatalf("IMS requests after the periodic refresh = %d, want 2", got)
	}
	resp := e.creds("creds")
	if resp.Data["access_token"] == first {
		t.Fatal("reader got the old token after the periodic refresh")
	}
	if got := e.emu.Stats().TokenRequests; got != 2 {
		t.Fatalf("the read after the refresh waited on IMS: %d requests", got)
	}
	if want := dayToken - dayMargin; resp.Secret.TTL != want {
		t.Errorf("lease from the refreshed token: ttl %s, want %s", resp.Secret.TTL, want)
	}
}

func TestPeriodicRefreshDuringOutageKeepsServingAndBacksOff(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	first := e.creds("creds").Data["access_token"]

	e.clock.Advance(17 * time.Hour)
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusServiceUnavailable})
	if err := e.periodic(); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("periodic during outage = %v, want an error naming HTTP 503", err)
	}
	if !strings.Contains(e.logs.String(), "current tokens are served until their safe end") {
		t.Error("the log does not say what failed and what happens meanwhile")
	}
	requests := e.emu.Stats().TokenRequests + e.emu.Stats().FaultsServed
	if err := e.periodic(); err != nil {
		t.Fatalf("periodic inside the back-off: %v", err)
	}
	if got := e.emu.Stats().TokenRequests + e.emu.Stats().FaultsServed; got != requests {
		t.Fatal("periodic retried IMS inside its back-off")
	}

	// Readers keep the valid token, without waiting on IMS.
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindHang})
	start := time.Now()
	if got := e.creds("creds").Data["access_token"]; got != first {
		t.Fatal("reader did not get the still-valid token during the outage")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("reader waited %s during the outage", d)
	}

	e.emu.SetFault(nil)
	e.clock.Advance(10 * time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatalf("periodic after recovery: %v", err)
	}
	waitFor(t, "new token served", func() bool { return e.creds("creds").Data["access_token"] != first })
}

func TestPeriodicWithoutConfigDoesNothing(t *testing.T) {
	e := newTestEnv(t)
	if err := e.periodic(); err != nil {
		t.Fatal(err)
	}
	if e.emu.Stats().TokenRequests != 0 {
		t.Fatal("periodic without config called IMS")
	}
}
