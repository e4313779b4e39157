package e2e

import (
	"fmt"
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
