package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSecretsNeverInPlainText drives every path that touches the client
// secret or a token (configure, shared and dedicated reads, renew, revoke,
// config read, refused config writes) on a server logging at trace level with
// a file audit device, then checks that neither the client secret nor any
// token IMS issued appears in plain text in the audit log or in the server
// log, which includes the plugin's own output.
func TestSecretsNeverInPlainText(t *testing.T) {
	const wrongSecret = "e2e-WRONG-secret-also-never-logged"
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	v.mustCLI("audit", "enable", "file", "file_path="+auditPath)

	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")
	v.mustCLI("write", "adobe/roles/firefly-dedicated", "scopes=openid,AdobeID,firefly_api", "mode=dedicated")

	// Reads through the HTTP API and the CLI, in both modes.
	var leases []string
	dedicated := map[string]string{} // lease id -> token
	for i := range 3 {
		s, _ := lcCreds(t, v, emu, "adobe/creds/firefly")
		leases = append(leases, s.LeaseID)
		s, tok := lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")
		leases = append(leases, s.LeaseID)
		dedicated[s.LeaseID] = tok
		if i == 0 {
			s, _ = lcCreds(t, v, emu, "adobe/creds")
			leases = append(leases, s.LeaseID)
		}
	}
	for _, p := range []string{"adobe/creds/firefly", "adobe/creds/firefly-dedicated"} {
		out := v.mustCLI("read", p)
		if !strings.Contains(out, "access_token") {
			t.Fatalf("vault read %s shows no access_token:\n%s", p, out)
		}
	}

	// Renew through the API and the CLI, then revoke every lease.
	for i, id := range leases {
		if i%2 == 0 {
			if _, err := v.client.Sys().Renew(id, 120); err != nil {
				t.Fatalf("renew %s: %v", id, err)
			}
		} else {
			v.mustCLI("lease", "renew", "-increment=120", id)
		}
	}
	for _, id := range leases {
		v.mustCLI("lease", "revoke", "-sync", id)
	}
	for id, tok := range dedicated {
		if emu.TokenValid(tok) {
			t.Errorf("revoked dedicated lease %s left its token valid", id)
		}
	}

	// Config reads never return the secret.
	if out := v.mustCLI("read", "adobe/config"); strings.Contains(out, testClientSecret) || !strings.Contains(out, testClientID) {
		t.Errorf("vault read adobe/config: want the client id and not the secret:\n%s", out)
	}
	lcCheckConfigIntact(t, v, emu)

	// Refused writes: a wrong secret, and the right secret with a scope
	// IMS does not grant. Neither may echo a secret, and neither is saved.
	out, err := v.cliAs(v.token, wrongSecret, "write", "adobe/config", "client_secret=-")
	if err == nil {
		t.Fatalf("writing a wrong client secret succeeded:\n%s", out)
	}
	if !strings.Contains(out, "invalid_client") {
		t.Errorf("the error for a wrong client secret does not name IMS's error invalid_client:\n%s", out)
	}
	if strings.Contains(out, wrongSecret) || strings.Contains(out, testClientSecret) {
		t.Errorf("the error for a wrong client secret contains a secret:\n%s", out)
	}
	out, err = v.cliAs(v.token, testClientSecret, "write", "adobe/config", "client_secret=-", "scopes="+fireflyScopes+",not_granted_scope")
	if err == nil {
		t.Fatalf("writing a scope IMS does not grant succeeded:\n%s", out)
	}
	if !strings.Contains(out, "invalid_scope") {
		t.Errorf("the error for a refused scope does not name IMS's error invalid_scope:\n%s", out)
	}
	if strings.Contains(out, testClientSecret) {
		t.Errorf("the error for a refused scope contains the client secret:\n%s", out)
	}
	lcCheckConfigIntact(t, v, emu)
	// The stored secret is still the right one.
	lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")

	// The operator views show token states, never tokens.
	views := v.mustCLI("read", "-format=json", "adobe/info")
	mresp, err := v.client.Logical().ReadRaw("adobe/metrics")
	if err != nil {
		t.Fatalf("read adobe/metrics: %v", err)
	}
	mbody, err := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if err != nil || !strings.Contains(string(mbody), "# TYPE") {
		t.Errorf("adobe/metrics is not Prometheus text (err %v):\n%s", err, mbody)
	}
	views += string(mbody)
	if !strings.Contains(views, "shared_tokens") {
		t.Errorf("adobe/info shows no shared_tokens:\n%s", views)
	}

	if n := emu.Stats().CredentialsInQuery; n != 0 {
		t.Errorf("%d IMS requests put client credentials in the query string, where they get logged", n)
	}

	// The audit log recorded the traffic (HMAC'd), so its check below is not vacuous.
	var audit string
	eventually(t, 10*time.Second, "the audit log to record the creds reads", func() error {
		b, err := os.ReadFile(auditPath)
		if err != nil {
			return err
		}
		audit = string(b)
		for _, want := range []string{`"adobe/creds/firefly"`, `"adobe/creds/firefly-dedicated"`, `"adobe/config"`, `"access_token":"hmac-sha256:`, `"sys/leases/revoke`, `"sys/leases/renew`} {
			if !strings.Contains(audit, want) {
				return fmt.Errorf("audit log (%d bytes) lacks %s", len(audit), want)
			}
		}
		if n := strings.Count(audit, `"access_token":"hmac-sha256:`); n < 9 {
			return fmt.Errorf("audit log holds %d HMAC'd access tokens, want at least one per read (9)", n)
		}
		return nil
	})

	// The requests that carried the secret were audited, with the secret HMAC'd.
	for what, sec := range map[string]string{"client secret": testClientSecret, "wrong client secret": wrongSecret} {
		h, err := v.client.Sys().AuditHash("file/", sec)
		if err != nil {
			t.Fatalf("sys/audit-hash/file: %v", err)
		}
		if !strings.Contains(audit, `"client_secret":"`+h+`"`) {
			t.Errorf("the audit log has no request carrying the %s (HMAC %s)", what, h)
		}
	}

	// Stop the server so that everything it and the plugin logged is on disk.
	v.stop()
	serverLog := v.logText()
	if !strings.Contains(serverLog, pluginCommand(pluginVersions[0])) {
		t.Errorf("the server log does not mention the plugin, so it may not capture the plugin's output")
	}

	tokens := emu.Tokens()
	// One to verify the config, one shared firefly token, five dedicated reads.
	if len(tokens) < 7 {
		t.Fatalf("the emulator issued %d tokens, want at least 7", len(tokens))
	}
	secrets := map[string]string{"the client secret": testClientSecret, "the wrong client secret": wrongSecret}
	for i, tok := range tokens {
		secrets[fmt.Sprintf("token %d", i)] = tok.AccessToken
		// The random signature alone identifies a token: catch truncated copies too.
		if parts := strings.Split(tok.AccessToken, "."); len(parts) == 3 && len(parts[2]) >= 32 {
			secrets[fmt.Sprintf("the signature of token %d", i)] = parts[2][:32]
		}
	}
	for what, s := range secrets {
		if strings.Contains(audit, s) {
			t.Errorf("the audit log contains %s in plain text", what)
		}
		if strings.Contains(serverLog, s) {
			t.Errorf("the server log contains %s in plain text", what)
		}
		if strings.Contains(views, s) {
			t.Errorf("adobe/info or adobe/metrics shows %s", what)
		}
	}
}
