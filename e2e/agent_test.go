package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// agentPolicy lets a token read the firefly creds and nothing else of the
// engine (the default policy, attached too, covers lease renewal).
const agentPolicy = `path "adobe/creds/firefly" { capabilities = ["read"] }`

// TestAgentRendersAndRefreshesToken: Vault Agent, logged in with a
// policy-limited token, renders a token from adobe/creds/firefly into a
// file, and renders a new valid token before the first one expires at IMS.
func TestAgentRendersAndRefreshesToken(t *testing.T) {
	const lifetime = 20 * time.Second
	emu := startEmulator(t, lifetime)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")

	if out, err := v.cliAs(v.token, agentPolicy, "policy", "write", "adobe-firefly-reader", "-"); err != nil {
		t.Fatalf("vault policy write: %v\n%s", err, out)
	}
	ts, err := v.client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"adobe-firefly-reader"}, TTL: "10m"})
	if err != nil {
		t.Fatal(err)
	}
	agentToken := ts.Auth.ClientToken
	// The policy really limits the token: it cannot read the config.
	if out, err := v.cliAs(agentToken, "", "read", "adobe/config"); err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("the agent's token can read adobe/config (err %v):\n%s", err, out)
	}

	dir := t.TempDir()
	dest := filepath.Join(dir, "adobe-token")
	hcl := v.agentConfig(t, dir, agentToken, fmt.Sprintf(`template_config {
  exit_on_retry_failure = true
}
template {
  contents    = "{{ with secret \"adobe/creds/firefly\" }}{{ .Data.access_token }}{{ end }}"
  destination = %q
}
`, dest))
	agentDone := agentStart(t, dir, hcl)

	// agentWaitFor polls the rendered file until it holds a token other
	// than prev, and returns it with the time it was first seen.
	agentWaitFor := func(prev string, deadline time.Time) (string, time.Time) {
		t.Helper()
		for {
			b, err := os.ReadFile(dest)
			now := time.Now()
			if tok := strings.TrimSpace(string(b)); err == nil && tok != "" && tok != prev {
				return tok, now
			}
			select {
			case err := <-agentDone:
				t.Fatalf("vault agent exited: %v", err)
			default:
			}
			if now.After(deadline) {
				t.Fatalf("%s has no new token after waiting until %s (content %q, err %v)", dest, deadline.Format(time.TimeOnly), b, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	issued := func(tok string) imsemu.IssuedToken {
		t.Helper()
		for _, it := range emu.Tokens() {
			if it.AccessToken == tok {
				return it
			}
		}
		t.Fatalf("%s holds a token the emulator never issued: %.20s...", dest, tok)
		return imsemu.IssuedToken{}
	}

	deadline := time.Now().Add(60 * time.Second)
	tok1, seen1 := agentWaitFor("", deadline)
	if !emu.TokenValid(tok1) {
		t.Fatalf("the agent rendered a token that is not valid at IMS")
	}
	first := issued(tok1)
	t.Logf("first token rendered at %s, expires at %s", seen1.Format(time.TimeOnly), first.ExpiresAt.Format(time.TimeOnly))

	// The agent is the only reader. The plugin replaces the token at its
	// refresh point (two thirds of its life) on a timer, so when the agent's
	// lease ends at the old token's safe end it reads the replacement.
	refreshAt := first.IssuedAt.Add(first.ExpiresAt.Sub(first.IssuedAt) * 2 / 3)
	var replacement imsemu.IssuedToken
	eventually(t, 30*time.Second, "the plugin to mint a replacement by itself", func() error {
		for _, it := range emu.Tokens() {
			if it.IssuedAt.After(first.IssuedAt) {
				replacement = it
				return nil
			}
		}
		return fmt.Errorf("no token issued after the first one")
	})
	if replacement.IssuedAt.Before(refreshAt.Add(-time.Second)) || !replacement.IssuedAt.Before(first.ExpiresAt.Add(-2*time.Second)) {
		t.Errorf("the replacement was minted at %s; want around the refresh point %s, well before the old token expires at %s",
			replacement.IssuedAt.Format(time.StampMilli), refreshAt.Format(time.StampMilli), first.ExpiresAt.Format(time.StampMilli))
	}

	tok2, seen2 := agentWaitFor(tok1, deadline)
	valid := emu.TokenValid(tok2)
	second := issued(tok2)
	if tok2 != replacement.AccessToken {
		t.Errorf("the agent rendered a token other than the background replacement")
	}
	t.Logf("second token rendered at %s (%s before the first expired), expires at %s",
		seen2.Format(time.TimeOnly), first.ExpiresAt.Sub(seen2).Round(time.Millisecond), second.ExpiresAt.Format(time.TimeOnly))
	if !valid {
		t.Errorf("the agent rendered a new token that is not valid at IMS")
	}
	if !seen2.Before(first.ExpiresAt) {
		t.Errorf("the new token was rendered at %s, not before the old one expired at %s: applications held an expired token",
			seen2.Format(time.StampMilli), first.ExpiresAt.Format(time.StampMilli))
	}
	if !second.ExpiresAt.After(first.ExpiresAt) {
		t.Errorf("the new token expires at %s, no later than the old one (%s)", second.ExpiresAt, first.ExpiresAt)
	}
}

// agentStart runs `vault agent` with the given config in dir until the test
// ends, printing its log when the test fails. The returned channel receives
// the agent's exit if it ends early.
func agentStart(t *testing.T, dir, hcl string) <-chan error {
	t.Helper()
	cfgPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(cfgPath, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "agent.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(suite.vaultBin, "agent", "-log-level=trace", "-config="+cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Only the config names the server and the token.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting vault agent: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		select {
		case <-done: //nolint:errcheck // the agent was just killed: Wait's "signal: killed" is expected
		case <-time.After(10 * time.Second):
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("vault agent log %s (last 12KB):\n%s", logPath, tail(b, 12288))
		}
	})
	return done
}
