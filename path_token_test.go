package adobeims

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

const dayToken = 24*time.Hour - time.Second // what IMS issues
const dayMargin = 5 * time.Minute           // its safety margin

func TestCredsSharedResponseAndLease(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	resp := e.creds("creds")

	tok, _ := resp.Data["access_token"].(string)
	if !e.emu.TokenValid(tok) {
		t.Fatalf("access_token %q is not a token the emulator issued", tok)
	}
	if resp.Data["token_type"] != "bearer" {
		t.Errorf("token_type = %v", resp.Data["token_type"])
	}
	if !reflect.DeepEqual(resp.Data["scopes"], strings.Split(testScopes, ",")) {
		t.Errorf("scopes = %v", resp.Data["scopes"])
	}
	expiresAt, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
	if err != nil || !strings.HasSuffix(resp.Data["expires_at"].(string), "Z") {
		t.Fatalf("expires_at %v is not RFC 3339 UTC: %v", resp.Data["expires_at"], err)
	}
	if d := expiresAt.Sub(e.clock.Now()); d < dayToken-2*time.Second || d > dayToken {
		t.Errorf("expires_at is %s from now, want about %s", d, dayToken)
	}
	if want := dayToken - dayMargin; resp.Secret.TTL != want || resp.Secret.MaxTTL != want {
		t.Errorf("lease ttl %s max %s, want both %s (expiry less the margin)", resp.Secret.TTL, resp.Secret.MaxTTL, want)
	}
	if !resp.Secret.Renewable {
		t.Error("lease not renewable")
	}
	if _, ok := resp.Secret.InternalData["access_token"]; ok {
		t.Error("a shared lease stores its token in internal data; it needs none")
	}
}

func TestCredsSharedReuseAcrossReadersAndRoles(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/a", map[string]any{"scopes": "firefly_api,openid"}))
	e.mustOK(e.write("roles/b", map[string]any{"scopes": "openid,firefly_api", "ttl": "10m"}))

	a := e.creds("creds/a").Data["access_token"]
	b := e.creds("creds/b").Data["access_token"]
	if a != b {
		t.Error("roles with the same scope set in another order got different tokens")
	}
	c := e.creds("creds").Data["access_token"]
	if c == a {
		t.Error("different scope sets shared a token")
	}
	if got := e.emu.Stats().TokenRequests; got != 2 {
		t.Fatalf("IMS token requests = %d, want 2 (one per scope set)", got)
	}
}

func TestCredsRoleCapsLease(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/capped", map[string]any{"scopes": "openid", "ttl": "1h", "max_ttl": "3h"}))
	resp := e.creds("creds/capped")
	if resp.Secret.TTL != time.Hour || resp.Secret.MaxTTL != 3*time.Hour {
		t.Fatalf("lease ttl %s max %s, want 1h and 3h", resp.Secret.TTL, resp.Secret.MaxTTL)
	}
}

func TestCredsUnknownRoleAndUnconfigured(t *testing.T) {
	e := newTestEnv(t)
	resp, err := e.read("creds")
	e.mustFail(resp, err, "not configured", "config")
	e.configure(nil)
	resp, err = e.read("creds/nope")
	e.mustFail(resp, err, `role "nope" does not exist`)
}

func TestRenewNeverPassesTokenExpiry(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid", "ttl": "1h"}))
	lease := e.creds("creds/r").Secret
	safeEnd := lease.IssueTime.Add(dayToken - dayMargin)

	e.clock.Advance(30 * time.Minute)
	resp := e.mustOK(e.renew(lease))
	if resp.Secret.TTL != time.Hour {
		t.Errorf("renewed ttl %s, want the role's 1h", resp.Secret.TTL)
	}
	if want := 30*time.Minute + time.Hour; resp.Secret.MaxTTL != want {
		t.Errorf("renewed max ttl %s, want %s: an increment must not pass the role's ttl from now", resp.Secret.MaxTTL, want)
	}

	e.clock.Advance(dayToken - dayMargin - 30*time.Minute - 10*time.Minute) // 10 minutes before the safe end
	resp = e.mustOK(e.renew(lease))
	if resp.Secret.TTL != 10*time.Minute {
		t.Errorf("renewed ttl near the end = %s, want 10m", resp.Secret.TTL)
	}
	if want := safeEnd.Sub(lease.IssueTime); resp.Secret.MaxTTL != want {
		t.Errorf("renewed max ttl %s, want %s (issue time to the token's safe end)", resp.Secret.MaxTTL, want)
	}

	e.clock.Advance(11 * time.Minute)
	resp, err := e.renew(lease)
	e.mustFail(resp, err, "cannot be renewed", "read creds/r again")
}

func TestRenewAfterRoleDeleted(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	lease := e.creds("creds/r").Secret
	e.mustOK(e.request("delete", "roles/r", nil))
	resp, err := e.renew(lease)
	e.mustFail(resp, err, `role "r" was deleted`)
}

func TestRenewThroughPluginGRPCTypes(t *testing.T) {
	// Through Vault's plugin gRPC layer internal data comes back as JSON
	// types; renew must work on what it gets back.
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	lease := e.creds("creds").Secret
	roundTripped, err := jsonRoundTrip(lease.InternalData)
	if err != nil {
		t.Fatalf("lease internal data does not survive JSON: %v", err)
	}
	lease.InternalData = roundTripped
	e.mustOK(e.renew(lease))
}

func TestSharedTokenReplacedAheadOfExpiry(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	first := e.creds("creds")

	e.clock.Advance(17 * time.Hour) // past two thirds of the token's life
	second := e.creds("creds")
	if second.Data["access_token"] != first.Data["access_token"] {
		t.Fatal("past the refresh point the reader waited for a new token instead of getting the valid one")
	}
	if want := dayToken - dayMargin - 17*time.Hour; second.Secret.TTL != want {
		t.Errorf("lease from an older token: ttl %s, want %s", second.Secret.TTL, want)
	}
	waitFor(t, "background replacement", func() bool { return e.emu.Stats().TokensIssued == 2 })
	waitFor(t, "replacement served", func() bool {
		return e.creds("creds").Data["access_token"] != first.Data["access_token"]
	})
	if got := e.emu.Stats().TokenRequests; got != 2 {
		t.Fatalf("IMS requests = %d, want 2", got)
	}
}

func TestConcurrentColdReadsMakeOneIMSRequest(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.emu.SetLatency(100 * time.Millisecond)
	const readers = 200
	var wg sync.WaitGroup
	tokens := make(chan string, readers)
	for range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.ReadOperation, Path: "creds", Storage: e.storage})
			if err != nil || resp.IsError() {
				t.Errorf("read failed: %v %v", err, resp)
				return
			}
			tokens <- resp.Data["access_token"].(string)
		}()
	}
	wg.Wait()
	close(tokens)
	distinct := map[string]bool{}
	for tok := range tokens {
		distinct[tok] = true
	}
	if len(distinct) != 1 {
		t.Errorf("readers got %d distinct tokens, want 1", len(distinct))
	}
	if got := e.emu.Stats().TokenRequests; got != 1 {
		t.Fatalf("%d concurrent cold reads made %d IMS requests, want 1", readers, got)
	}
}

func TestDedicatedMintsPerReadAndRevokeInvalidates(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))

	one, two := e.creds("creds/d"), e.creds("creds/d")
	t1, t2 := one.Data["access_token"].(string), two.Data["access_token"].(string)
	if t1 == t2 {
		t.Fatal("dedicated reads shared a token")
	}
	if err := e.revoke(one.Secret); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if e.emu.TokenValid(t1) {
		t.Fatal("revoked dedicated token still valid at IMS")
	}
	if !e.emu.TokenValid(t2) {
		t.Fatal("revoking one lease invalidated another")
	}
	// Idempotent: revoking again still succeeds.
	if err := e.revoke(one.Secret); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if got := e.emu.Stats().Invalidated; got != 1 {
		t.Fatalf("IMS invalidated %d tokens, want 1", got)
	}
}

func TestSharedRevokeCallsNothingUpstream(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	resp := e.creds("creds")
	if err := e.revoke(resp.Secret); err != nil {
		t.Fatal(err)
	}
	if s := e.emu.Stats(); s.InvalidateRequests != 0 || !e.emu.TokenValid(resp.Data["access_token"].(string)) {
		t.Fatalf("shared revoke touched IMS: %+v", s)
	}
}

func TestDedicatedRevokeAfterConfigDeleted(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	lease := e.creds("creds/d").Secret
	e.mustOK(e.request("delete", "config", nil))
	if err := e.revoke(lease); err != nil {
		t.Fatalf("revoke with config deleted: %v", err)
	}
}

func TestDedicatedRevokeRetriesOnNetworkFailure(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	resp := e.creds("creds/d")
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointInvalidate, Kind: imsemu.KindStatus, Status: http.StatusServiceUnavailable})
	if err := e.revoke(resp.Secret); err == nil || !strings.Contains(err.Error(), "Vault retries") {
		t.Fatalf("revoke while IMS is down = %v, want an error so Vault retries", err)
	}
	e.emu.SetFault(nil)
	if err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("revoke after recovery: %v", err)
	}
	if e.emu.TokenValid(resp.Data["access_token"].(string)) {
		t.Fatal("token still valid after a successful retry")
	}
}

func TestTokenAtItsEndIsNeverLeased(t *testing.T) {
	// IMS answers with a token whose safe end has passed, or is now, by the
	// time the answer arrives: the clock moves on while the answer travels.
	for _, tc := range []struct {
		name       string
		life, late time.Duration
		passed     string
	}{
		{"past it", 5 * time.Second, 5 * time.Second, "passed 500ms ago"},     // safe end at 4.5s
		{"exactly at it", 10 * time.Second, 9 * time.Second, "passed 0s ago"}, // a zero TTL would be the mount's default
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e *testEnv
			e = newTestEnvWith(t, envOptions{afterIMS: func(req *http.Request) {
				if strings.HasSuffix(req.URL.Path, "/ims/token/v3") {
					e.clock.Advance(tc.late)
				}
			}})
			e.configure(map[string]any{"verify": false})
			e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
			e.emu.SetExpiresIn(tc.life)
			resp, err := e.read("creds/d")
			e.mustFail(resp, err, "too soon to lease", tc.passed)
			if resp != nil && resp.Secret != nil {
				t.Fatalf("a lease was issued: %#v", resp.Secret)
			}
			// No lease will revoke the dedicated token, so it must not stay live.
			issued := e.emu.Tokens()
			if len(issued) != 1 {
				t.Fatalf("IMS issued %d tokens, want 1", len(issued))
			}
			if !issued[0].Invalidated {
				t.Fatal("the dedicated token that was not leased is still valid at IMS")
			}
			if n, failed := e.b.metrics.invalidations.Load(), e.b.metrics.invalidationFailures.Load(); n != 1 || failed != 0 {
				t.Errorf("counters: %d invalidations, %d failed; want 1 and 0", n, failed)
			}
			if strings.Contains(e.logs.String(), "could not invalidate") {
				t.Errorf("the log reports a failed invalidation that succeeded:\n%s", e.logs.String())
			}
		})
	}
}

// TestCredsCarryWhatAnAdobeAPICallNeeds: every Adobe API call sends the
// client ID as x-api-key beside the token, and some the org as
// x-gw-ims-org-id; creds returns both so that applications need no access to
// config. The secret is never among them.
func TestCredsCarryWhatAnAdobeAPICallNeeds(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra map[string]any
		org   string
	}{
		{"without org_id", nil, ""},
		{"with org_id", map[string]any{"org_id": "1234ABCD@AdobeOrg"}, "1234ABCD@AdobeOrg"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(tc.extra)
			e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
			for _, path := range []string{"creds", "creds/d"} {
				data := e.creds(path).Data
				if data[keyClientID] != testClientID {
					t.Errorf("%s: client_id %v, want %q", path, data[keyClientID], testClientID)
				}
				org, ok := data[keyOrgID]
				if tc.org == "" && ok {
					t.Errorf("%s: org_id %v returned though the config has none", path, org)
				}
				if tc.org != "" && org != tc.org {
					t.Errorf("%s: org_id %v, want %q", path, org, tc.org)
				}
				if _, ok := data[keyClientSecret]; ok {
					t.Errorf("%s returned client_secret", path)
				}
			}
		})
	}
}
