package e2e

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUpgradeInPlace: a mount running v0.1.0 is moved to v0.2.0 with
// `secrets tune -plugin-version` and `plugin reload`; Vault then runs the
// v0.2.0 binary for adobe/, and config, roles and leases carry over.
func TestUpgradeInPlace(t *testing.T) {
	from, to := pluginVersions[0], pluginVersions[1]
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis", "ttl=30m")
	v.mustCLI("write", "adobe/roles/firefly-dedicated", "scopes=openid,AdobeID,firefly_api", "mode=dedicated")
	rolesBefore := map[string]map[string]any{
		"firefly":           lcRead(t, v, "adobe/roles/firefly"),
		"firefly-dedicated": lcRead(t, v, "adobe/roles/firefly-dedicated"),
	}
	sharedLease, sharedTok := lcCreds(t, v, emu, "adobe/creds/firefly")
	dedLease, dedTok := lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")
	upgradeCheckMount(t, v, from, from, suite.sha256[from])
	if got := lcRead(t, v, "adobe/info")["version"]; got != from {
		t.Errorf("adobe/info version = %v before the upgrade, want %s", got, from)
	}

	v.registerPlugin(to)
	v.mustCLI("secrets", "tune", "-plugin-version="+to, "adobe/")
	// Tuning alone selects the version; the old binary keeps running until the reload.
	upgradeCheckMount(t, v, to, from, suite.sha256[from])
	if row := upgradeCLIRow(t, v); !strings.Contains(row, from) {
		t.Errorf("before the reload, vault secrets list -detailed does not show %s running on adobe/: %s", from, row)
	}

	v.mustCLI("plugin", "reload", "-plugin="+pluginName)
	eventually(t, 30*time.Second, "adobe/ to run "+to, func() error {
		return upgradeMountState(v, to, to, suite.sha256[to])
	})
	// The CLI table's adobe/ row shows the new version (as selected and as
	// running) and no longer the old one, which it showed as running before.
	if row := upgradeCLIRow(t, v); !strings.Contains(row, to) || strings.Contains(row, from) {
		t.Errorf("vault secrets list -detailed: adobe/ row does not show only %s: %s", to, row)
	}

	vpid := lcVaultPID(t, v)
	eventually(t, 20*time.Second, "the v0.1.0 plugin process to end and a v0.2.0 one to serve", func() error {
		// A read starts the new process if Vault loads it lazily.
		if s, err := v.client.Logical().Read("adobe/creds"); err != nil {
			return err
		} else if _, err := lcCheckCreds(s, emu); err != nil {
			return err
		}
		if old := lcPluginPIDs(t, vpid, pluginCommand(from)); len(old) != 0 {
			return fmt.Errorf("%s still running: %v", pluginCommand(from), old)
		}
		if cur := lcPluginPIDs(t, vpid, pluginCommand(to)); len(cur) != 1 {
			return fmt.Errorf("want one %s process, found %v", pluginCommand(to), cur)
		}
		return nil
	})

	if got := lcRead(t, v, "adobe/info")["version"]; got != to {
		t.Errorf("adobe/info version = %v after the upgrade, want %s", got, to)
	}
	// The new version serves the shared token the old one persisted.
	minted := emu.Stats().TokenRequests
	if _, tok := lcCreds(t, v, emu, "adobe/creds/firefly"); tok != sharedTok || emu.Stats().TokenRequests != minted {
		t.Errorf("after the upgrade the shared read minted anew (same token: %v)", tok == sharedTok)
	}
	lcCheckConfigIntact(t, v, emu)
	if got := lcListRoles(t, v); !reflect.DeepEqual(got, []string{"firefly", "firefly-dedicated"}) {
		t.Errorf("roles after the upgrade = %v", got)
	}
	for name, before := range rolesBefore {
		if after := lcRead(t, v, "adobe/roles/"+name); !reflect.DeepEqual(before, after) {
			t.Errorf("role %s changed across the upgrade:\nbefore %v\nafter  %v", name, before, after)
		}
	}
	lcCreds(t, v, emu, "adobe/creds/firefly")
	_, dedTok2 := lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")
	if dedTok2 == dedTok {
		t.Errorf("a dedicated read after the upgrade returned an earlier lease's token")
	}

	// Leases issued by v0.1.0 are renewed and revoked by v0.2.0.
	if r, err := v.client.Sys().Renew(sharedLease.LeaseID, 300); err != nil {
		t.Errorf("renewing a lease issued by %s: %v", from, err)
	} else if r.LeaseDuration <= 0 || r.LeaseDuration > 300 {
		t.Errorf("renewed lease duration %ds, want within (0, 300]", r.LeaseDuration)
	}
	if out, err := v.cli("lease", "revoke", "-sync", dedLease.LeaseID); err != nil {
		t.Fatalf("revoking a dedicated lease issued by %s: %v\n%s", from, err, out)
	}
	if emu.TokenValid(dedTok) {
		t.Errorf("revoking a dedicated lease issued by %s left its token valid at IMS", from)
	}
}

// upgradeCLIRow is the adobe/ row of `vault secrets list -detailed`.
func upgradeCLIRow(t *testing.T, v *vaultServer) string {
	t.Helper()
	out := v.mustCLI("secrets", "list", "-detailed")
	row := regexp.MustCompile(`(?m)^adobe/\s.*$`).FindString(out)
	if row == "" {
		t.Fatalf("vault secrets list -detailed has no adobe/ row:\n%s", out)
	}
	return row
}

// upgradeCheckMount fails the test unless adobe/ is at the given versions.
func upgradeCheckMount(t *testing.T, v *vaultServer, selected, running, runningSHA string) {
	t.Helper()
	if err := upgradeMountState(v, selected, running, runningSHA); err != nil {
		t.Fatal(err)
	}
}

// upgradeMountState compares adobe/'s selected plugin version, running
// version and running binary's SHA-256 with the given ones.
func upgradeMountState(v *vaultServer, selected, running, runningSHA string) error {
	mounts, err := v.client.Sys().ListMounts()
	if err != nil {
		return err
	}
	m, ok := mounts["adobe/"]
	if !ok {
		return fmt.Errorf("adobe/ is not mounted")
	}
	if m.PluginVersion != selected || m.RunningVersion != running || m.RunningSha256 != runningSHA {
		return fmt.Errorf("adobe/: plugin_version %q running_plugin_version %q running_sha256 %q; want %q %q %q",
			m.PluginVersion, m.RunningVersion, m.RunningSha256, selected, running, runningSHA)
	}
	return nil
}
