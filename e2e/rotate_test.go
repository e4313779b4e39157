package e2e

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// rtEmulatorSecret matches the client secrets the IMS emulator creates (its
// own format: "emu-" and 32 hex digits). No test ever sees a rotated secret,
// so the logs and responses are searched for the shape instead.
var rtEmulatorSecret = regexp.MustCompile(`emu-[0-9a-f]{32}`)

// rtConfigure writes a config that rotation can use: the emulator's org and
// credential IDs, and the management API on the emulator's URL.
func rtConfigure(v *vaultServer, emu *emulator, extra ...string) {
	v.t.Helper()
	v.configure(emu, append([]string{"org_id=" + imsemu.DefaultOrgID, "credential_id=" + imsemu.DefaultCredentialID}, extra...)...)
}

func rtAccessToken(t *testing.T, v *vaultServer, path string) string {
	t.Helper()
	s, err := v.client.Logical().Read(path)
	if err != nil || s == nil {
		t.Fatalf("read %s: %v, %v", path, s, err)
	}
	tok, _ := s.Data["access_token"].(string)
	if tok == "" {
		t.Fatalf("read %s: no access_token", path)
	}
	return tok
}

func rtSecretOf(emu *emulator, token string) string {
	for _, it := range emu.Tokens() {
		if it.AccessToken == token {
			return it.SecretUUID
		}
	}
	return ""
}

func rtCheckNoSecrets(t *testing.T, where, text string) {
	t.Helper()
	if strings.Contains(text, testClientSecret) {
		t.Errorf("%s contains the original client secret", where)
	}
	if rtEmulatorSecret.MatchString(text) {
		t.Errorf("%s contains a rotated client secret", where)
	}
}

// rtCheckLogClean stops the server, so that everything it and the plugin
// logged is on disk, and searches its trace-level log for the client secrets
// and for every token IMS issued: the readers' tokens, the ones rotation
// minted to prove each new secret, and the management tokens, bearers that
// can create and delete the credential's secrets.
func rtCheckLogClean(t *testing.T, v *vaultServer, emu *emulator) {
	t.Helper()
	v.stop()
	text := v.logText()
	if !strings.Contains(text, pluginCommand(pluginVersions[0])) {
		t.Errorf("the Vault log does not mention the plugin, so it may not capture the plugin's output")
	}
	rtCheckNoSecrets(t, "the Vault log "+v.logPath, text)
	management := 0
	for i, tok := range emu.Tokens() {
		what := fmt.Sprintf("token %d (scopes %s)", i, strings.Join(tok.Scopes, ","))
		if slices.Contains(tok.Scopes, "manage_client_secrets") {
			management++
			what = "management " + what
		}
		// The random signature alone identifies a token: catch truncated copies too.
		parts := strings.Split(tok.AccessToken, ".")
		switch {
		case strings.Contains(text, tok.AccessToken):
			t.Errorf("the Vault log %s contains %s", v.logPath, what)
		case len(parts) == 3 && len(parts[2]) >= 32 && strings.Contains(text, parts[2][:32]):
			t.Errorf("the Vault log %s contains the signature of %s", v.logPath, what)
		}
	}
	if management == 0 {
		t.Errorf("IMS issued no management token, so the search of the log proved nothing about them")
	}
}

// TestRotateRootThroughVault rotates with `vault write -f` in a real Vault:
// the old secret is refused by IMS afterwards, the cached shared token is
// still served, and new tokens come from the new secret.
func TestRotateRootThroughVault(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	rtConfigure(v, emu)
	original := emu.Secrets()[0].UUID
	shared := rtAccessToken(t, v, "adobe/creds")

	out := v.mustCLI("write", "-f", "-format=json", "adobe/config/rotate-root")
	rtCheckNoSecrets(t, "vault write adobe/config/rotate-root", out)
	var resp api.Secret
	if err := json.Unmarshal([]byte(out), &resp); err != nil {
		t.Fatalf("rotate-root output is not JSON: %v\n%s", err, out)
	}
	uuid, _ := resp.Data["client_secret_uuid"].(string)
	if resp.Data["previous_client_secret_uuid"] != original || resp.Data["previous_client_secret_deleted"] != true {
		t.Errorf("rotate-root says previous %v deleted=%v, want %s deleted", resp.Data["previous_client_secret_uuid"], resp.Data["previous_client_secret_deleted"], original)
	}
	if got := emu.Secrets(); len(got) != 1 || got[0].UUID != uuid {
		t.Fatalf("the emulator has secrets %v, want only the new %q", got, uuid)
	}
	if emu.SecretAccepted(testClientSecret) {
		t.Error("IMS still accepts the old client secret")
	}

	if got := rtAccessToken(t, v, "adobe/creds"); got != shared {
		t.Error("adobe/creds returns another token after rotation: the shared token was dropped")
	}
	v.mustCLI("write", "adobe/roles/orgs", "scopes=openid,AdobeID,read_organizations")
	if tok := rtAccessToken(t, v, "adobe/creds/orgs"); rtSecretOf(emu, tok) != uuid || !emu.TokenValid(tok) {
		t.Errorf("a new token was not minted with the new secret %s", uuid)
	}

	cfg, err := v.client.Logical().Read("adobe/config")
	if err != nil || cfg == nil {
		t.Fatalf("read adobe/config: %v", err)
	}
	if cfg.Data["client_secret_uuid"] != uuid || cfg.Data["last_rotation"] != resp.Data["last_rotation"] {
		t.Errorf("config shows client_secret_uuid %v last_rotation %v", cfg.Data["client_secret_uuid"], cfg.Data["last_rotation"])
	}

	// Through the HTTP API too, and Vault's own secret is replaced by uuid.
	second, err := v.client.Logical().Write("adobe/config/rotate-root", nil)
	if err != nil {
		t.Fatalf("API write adobe/config/rotate-root: %v", err)
	}
	if got := emu.Secrets(); len(got) != 1 || got[0].UUID != second.Data["client_secret_uuid"] || second.Data["previous_client_secret_uuid"] != uuid {
		t.Errorf("after the second rotation the emulator has %v; response %v", got, second.Data)
	}
	rtAccessToken(t, v, "adobe/creds/orgs")
	rtCheckLogClean(t, v, emu)
}

// TestRotationPeriodRotatesByItself sets a short rotation_period and waits
// for Vault's periodic call (about once a minute) to rotate the secret.
func TestRotationPeriodRotatesByItself(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	rtConfigure(v, emu, "rotation_period=10s")
	first := emu.Secrets()[0].UUID
	start := time.Now()

	eventually(t, 120*time.Second, "the plugin to rotate the secret on its own", func() error {
		got := emu.Secrets()
		if emu.SecretAccepted(testClientSecret) || len(got) != 1 || got[0].UUID == first {
			return fmt.Errorf("the emulator has %d secrets, old secret accepted=%v", len(got), emu.SecretAccepted(testClientSecret))
		}
		return nil
	})
	t.Logf("rotated on its own after %s", time.Since(start).Round(time.Second))

	cfg, err := v.client.Logical().Read("adobe/config")
	if err != nil || cfg == nil {
		t.Fatalf("read adobe/config: %v", err)
	}
	for _, k := range []string{"last_rotation", "next_rotation", "client_secret_uuid"} {
		if s, _ := cfg.Data[k].(string); s == "" {
			t.Errorf("config shows no %s after an automatic rotation: %v", k, cfg.Data)
		}
	}
	if tok := rtAccessToken(t, v, "adobe/creds"); !emu.TokenValid(tok) {
		t.Error("adobe/creds does not return a valid token after the automatic rotation")
	}
	rtCheckLogClean(t, v, emu)
}
