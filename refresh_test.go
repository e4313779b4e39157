package adobeims

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
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

// TestReadsPastTheRefreshPointStartOneRefresh: 5,000 reads past the refresh
// point while IMS hangs start one background refresh between them, not one
// each, and its failure is logged once.
func TestReadsPastTheRefreshPointStartOneRefresh(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(map[string]any{"verify": false})
	e.creds("creds")
	e.clock.Advance(17 * time.Hour)

	hung := newGate()
	var first atomic.Bool
	e.setBeforeNet(func(op string) error {
		if op != opMint {
			return nil
		}
		if first.CompareAndSwap(false, true) {
			close(hung.reached)
			<-hung.released
		}
		return errors.New("injected: IMS unreachable")
	})
	baseline := runtime.NumGoroutine()
	e.creds("creds")
	hung.waitReached(t)
	for range 5000 {
		req := &logical.Request{Operation: logical.ReadOperation, Path: "creds", Storage: e.storage}
		if resp, err := e.b.HandleRequest(context.Background(), req); err != nil || resp.IsError() {
			t.Fatalf("a read while the refresh hangs failed: %v %v", resp, err)
		}
	}
	if n := runtime.NumGoroutine(); n > baseline+20 {
		t.Errorf("%d goroutines while the refresh hangs, %d before the reads", n, baseline)
	}
	hung.release()
	const warning = "background refresh of a shared token failed"
	waitFor(t, "the failed refresh to be logged", func() bool { return strings.Contains(e.logs.String(), warning) })
	e.b.cache.Close() // waits for background work
	if n := strings.Count(e.logs.String(), warning); n != 1 {
		t.Errorf("the failed refresh was logged %d times, want once", n)
	}
	// Nothing the hang started is left behind.
	waitFor(t, "goroutines back near the baseline", func() bool { return runtime.NumGoroutine() <= baseline+20 })
}

// TestUnmountDuringARefreshLogsNothing: unmounting (Clean) while a background
// refresh is in flight ends it quietly: its failure is the unmount's doing.
func TestUnmountDuringARefreshLogsNothing(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(map[string]any{"verify": false})
	e.creds("creds")
	e.clock.Advance(17 * time.Hour)

	hung := newGate()
	e.mu.Lock()
	e.hang = func(op string) bool {
		if op == opMint && hung.fired.CompareAndSwap(false, true) {
			close(hung.reached)
		}
		return op == opMint
	}
	e.mu.Unlock()
	e.creds("creds")
	hung.waitReached(t)
	e.b.Clean(context.Background()) // cancels the refresh, and waits for it
	if strings.Contains(e.logs.String(), "refresh of a shared token failed") {
		t.Error("unmounting logged a failed refresh")
	}
}
