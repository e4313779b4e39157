package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// TestPluginReloadInsideAThrottleWindowSendsNothing: IMS throttles the
// credential for two minutes; `vault plugin reload` starts a new plugin
// process with nothing in memory, which reads the window the old one
// stored: it shows the same throttled_until, answers cold reads with 429
// naming that time, and sends IMS nothing.
func TestPluginReloadInsideAThrottleWindowSendsNothing(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/cold", "scopes=openid,firefly_api")

	reader, err := v.client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	reader.SetToken(v.client.Token())
	reader.SetMaxRetries(0) // the plugin's own answer is what is checked
	coldRead := func() error {
		_, err := reader.Logical().Read("adobe/creds/cold")
		return err
	}

	emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 429, RetryAfter: "120", Times: 1})
	if err := coldRead(); err == nil {
		t.Fatal("a cold read succeeded while IMS throttles")
	}
	shown := throttledUntil(t, v)
	if shown == "" {
		t.Fatal("info shows no throttle after IMS answered 429")
	}
	vpid := lcVaultPID(t, v)
	oldPIDs := lcPluginPIDs(t, vpid, pluginCommand(pluginVersions[0]))
	requests := emu.Stats().TokenRequests

	v.mustCLI("plugin", "reload", "-plugin="+pluginName)
	eventually(t, 30*time.Second, "a new plugin process to answer", func() error {
		if err := coldRead(); err == nil {
			return fmt.Errorf("a cold read succeeded inside the throttle window")
		}
		pids := lcPluginPIDs(t, vpid, pluginCommand(pluginVersions[0]))
		if len(pids) == 0 || slices.ContainsFunc(pids, func(p int) bool { return slices.Contains(oldPIDs, p) }) {
			return fmt.Errorf("plugin processes %v, before the reload %v", pids, oldPIDs)
		}
		return nil
	})
	if got := throttledUntil(t, v); got != shown {
		t.Errorf("the reloaded plugin shows throttled_until %q, want %q", got, shown)
	}
	for range 5 {
		err := coldRead()
		var re *api.ResponseError
		if err == nil || !asResponseError(err, &re) || re.StatusCode != 429 || !strings.Contains(err.Error(), shown) {
			t.Errorf("a cold read after the reload: %v; want a 429 naming %s", err, shown)
		}
	}
	if n := emu.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("the reloaded plugin sent %d token requests inside the throttle window, want 0", n)
	}
	t.Logf("economy: plugin reload inside a throttle window, %d IMS token requests", emu.Stats().TokenRequests-requests)
}

func throttledUntil(t *testing.T, v *vaultServer) string {
	t.Helper()
	s, err := v.client.Logical().Read("adobe/info")
	if err != nil {
		t.Fatalf("reading info: %v", err)
	}
	u, _ := s.Data["throttled_until"].(string)
	return u
}
