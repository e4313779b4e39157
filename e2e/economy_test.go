package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestPluginReloadReusesThePersistedToken: `vault plugin reload` starts the
// plugin anew, with nothing in memory; it serves the shared token it
// persisted, and IMS sees no token request.
func TestPluginReloadReusesThePersistedToken(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")
	_, before := lcCreds(t, v, emu, "adobe/creds/firefly")
	vpid := lcVaultPID(t, v)
	oldPIDs := lcPluginPIDs(t, vpid, pluginCommand(pluginVersions[0]))
	requests := emu.Stats().TokenRequests

	v.mustCLI("plugin", "reload", "-plugin="+pluginName)
	var after string
	eventually(t, 30*time.Second, "a read served by a new plugin process", func() error {
		s, err := v.client.Logical().Read("adobe/creds/firefly")
		if err != nil {
			return err
		}
		if after, err = lcCheckCreds(s, emu); err != nil {
			return err
		}
		for _, p := range lcPluginPIDs(t, vpid, pluginCommand(pluginVersions[0])) {
			for _, old := range oldPIDs {
				if p == old {
					return fmt.Errorf("plugin process %d still serves", p)
				}
			}
		}
		return nil
	})
	if after != before {
		t.Error("the reloaded plugin did not serve the persisted shared token")
	}
	if n := emu.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("the reload cost %d IMS token requests, want 0", n)
	}
	t.Logf("economy: plugin reload, %d IMS token requests", emu.Stats().TokenRequests-requests)
}

// TestColdScopeSetsStayUnderTheCap: 300 cold scope sets read at once, with
// max_concurrent_ims_requests=4, never have more than 4 token requests in
// flight at IMS (the emulator records its peak), make 300 requests in all,
// and all succeed.
func TestColdScopeSetsStayUnderTheCap(t *testing.T) {
	const sets, limit = 300, 4
	emu := startEmulator(t, 0)
	emu.SetLatency(20 * time.Millisecond) // so that requests overlap
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	scopes := []string{"openid", "AdobeID", "session", "additional_info", "read_organizations", "firefly_api", "ff_apis",
		"additional_info.projectedProductContext", "additional_info.roles", "adobeio_api"}
	if _, err := v.client.Logical().Write("adobe/config", map[string]any{
		"scopes": strings.Join(scopes, ","), "max_concurrent_ims_requests": limit, "verify": false,
	}); err != nil {
		t.Fatalf("config: %v", err)
	}
	var roles []string
	for mask := 1; len(roles) < sets; mask++ {
		var set []string
		for i, s := range scopes {
			if mask&(1<<i) != 0 {
				set = append(set, s)
			}
		}
		name := fmt.Sprintf("set%d", mask)
		if _, err := v.client.Logical().Write("adobe/roles/"+name, map[string]any{"scopes": strings.Join(set, ",")}); err != nil {
			t.Fatalf("role %s: %v", name, err)
		}
		roles = append(roles, name)
	}
	emu.ResetStats()

	var wg sync.WaitGroup
	errs := make(chan error, sets)
	start := time.Now()
	for _, name := range roles {
		wg.Go(func() {
			if _, err := v.client.Logical().Read("adobe/creds/" + name); err != nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		})
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		failed++
		if failed <= 5 {
			t.Error(err)
		}
	}
	s := emu.Stats()
	t.Logf("economy: %d cold scope sets with max_concurrent_ims_requests=%d: %d IMS token requests, peak %d in flight, %d errors, %s",
		sets, limit, s.TokenRequests, s.TokenInFlightPeak, failed, time.Since(start).Round(time.Millisecond))
	if s.TokenInFlightPeak > limit {
		t.Errorf("%d token requests were in flight at once, more than the cap of %d", s.TokenInFlightPeak, limit)
	}
	if s.TokenInFlightPeak < 2 {
		t.Errorf("peak of %d in flight: the reads did not overlap, so the cap was not exercised", s.TokenInFlightPeak)
	}
	if s.TokenRequests != sets {
		t.Errorf("%d IMS token requests, want %d (one per scope set)", s.TokenRequests, sets)
	}
}
