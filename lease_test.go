package adobeims

import (
	"testing"
	"time"
)

// TestRoleTTLNeverPassesTheSafeEnd: a role's ttl caps a lease, it never
// lengthens one. A token with minutes left yields a lease that ends at the
// token's safe end however long the role's ttl, in either mode.
func TestRoleTTLNeverPassesTheSafeEnd(t *testing.T) {
	const life = 10 * time.Minute   // what IMS issues in this test
	const safeLife = life - life/10 // its safe end: a tenth of its life earlier
	for _, mode := range []string{"shared", "dedicated"} {
		t.Run(mode, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(map[string]any{"verify": false})
			e.mustOK(e.write("roles/long", map[string]any{"scopes": "openid", "mode": mode, "ttl": "1h", "max_ttl": "2h"}))
			e.emu.SetExpiresIn(life)
			resp := e.creds("creds/long")
			if resp.Secret.TTL != safeLife || resp.Secret.MaxTTL != safeLife {
				t.Fatalf("lease ttl %s max %s under a role with ttl 1h, for a token of %s: want both %s (the token's safe end)",
					resp.Secret.TTL, resp.Secret.MaxTTL, life, safeLife)
			}
		})
	}
}

// TestDedicatedLeaseEndingAtItsTTLInvalidatesItsToken: a dedicated lease ends
// at the token's safe end, minutes before IMS expires the token. Vault's
// revocation of the expired lease must still invalidate the token at IMS:
// only a token past its expiry needs no call.
func TestDedicatedLeaseEndingAtItsTTLInvalidatesItsToken(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	resp := e.creds("creds/d")
	tok := resp.Data["access_token"].(string)

	e.clock.Advance(resp.Secret.TTL) // the lease expires: Vault revokes it now
	if err := e.revoke(resp.Secret); err != nil {
		t.Fatalf("revoking the expired lease: %v", err)
	}
	if s := e.emu.Stats(); s.InvalidateRequests != 1 || e.emu.TokenValid(tok) {
		t.Fatalf("after the lease expired at the token's safe end (%s before its expiry), IMS saw %d invalidate requests and the token is valid=%v: want it invalidated",
			dayMargin, s.InvalidateRequests, e.emu.TokenValid(tok))
	}
}

// TestRevokePastTheTokenExpiryCallsNothing: a lease revoked once its token
// has expired at IMS (Vault retrying a revocation, or catching up after
// downtime) ends without a call.
func TestRevokePastTheTokenExpiryCallsNothing(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	lease := e.creds("creds/d").Secret

	e.clock.Advance(dayToken)
	if err := e.revoke(lease); err != nil {
		t.Fatalf("revoking a lease whose token expired: %v", err)
	}
	if n := e.emu.Stats().InvalidateRequests; n != 0 {
		t.Fatalf("revoking a lease whose token expired made %d IMS invalidate requests, want none", n)
	}
}

// TestRenewWithoutRoleTTLRunsToTheSafeEnd: a lease under no role ttl (creds,
// or a role without one) renews up to the token's safe end; only a role's ttl
// caps the life a renewal gives.
func TestRenewWithoutRoleTTLRunsToTheSafeEnd(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	for _, path := range []string{"creds", "creds/r"} {
		lease := e.creds(path).Secret
		e.clock.Advance(time.Hour)
		resp := e.mustOK(e.renew(lease))
		if want := dayToken - dayMargin; resp.Secret.MaxTTL != want || resp.Secret.TTL != want-time.Hour {
			t.Errorf("%s renewed an hour in: ttl %s max %s, want %s and %s (the token's safe end)", path, resp.Secret.TTL, resp.Secret.MaxTTL, want-time.Hour, want)
		}
	}
}
