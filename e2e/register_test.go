package e2e

import (
	"strings"
	"testing"
)

// TestRegisterMountAndMint is the smallest whole path: register by SHA-256
// and version, mount, configure, mint a token with the vault CLI.
func TestRegisterMountAndMint(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()

	if out := v.mustCLI("plugin", "list", "-detailed", "secret"); !strings.Contains(out, pluginName) || !strings.Contains(out, pluginVersions[0]) {
		t.Errorf("vault plugin list does not show %s %s:\n%s", pluginName, pluginVersions[0], out)
	}
	if out := v.mustCLI("secrets", "list", "-detailed"); !strings.Contains(out, "adobe/") || !strings.Contains(out, pluginVersions[0]) {
		t.Errorf("vault secrets list -detailed does not show adobe/ at %s:\n%s", pluginVersions[0], out)
	}
	for path, want := range map[string]string{
		"adobe/config":        "OAuth Server-to-Server credential",
		"adobe/roles/x":       "scope set and lease policy",
		"adobe/creds/firefly": "never outlives the token",
	} {
		if out := v.mustCLI("path-help", path); !strings.Contains(out, want) {
			t.Errorf("vault path-help %s lacks %q:\n%s", path, want, out)
		}
	}

	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes="+fireflyScopes)
	out := v.mustCLI("read", "-format=json", "adobe/creds/firefly")
	var tok string
	for _, it := range emu.Tokens() {
		if strings.Contains(out, it.AccessToken) {
			tok = it.AccessToken
		}
	}
	if tok == "" || !emu.TokenValid(tok) {
		t.Fatalf("vault read adobe/creds/firefly did not return a valid emulator token:\n%s", out)
	}
}
