package e2e

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

const policyFireflyReader = `
# Applications that call Firefly read tokens of the firefly role, nothing else.
path "adobe/creds/firefly" {
  capabilities = ["read"]
}
`

// TestPolicyReadOnOneRoleGrantsThatRoleOnly gives tokens (made through the
// CLI and the API) a policy with read on adobe/creds/firefly alone, and checks
// through both the CLI and the API that they get Firefly tokens and are
// refused everything else in the mount with 403 permission denied.
func TestPolicyReadOnOneRoleGrantsThatRoleOnly(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes="+ctScopesFirefly)
	v.mustCLI("write", "adobe/roles/other", "scopes="+ctScopesOrgs)

	if out, err := v.cliAs(v.token, policyFireflyReader, "policy", "write", "firefly-reader", "-"); err != nil {
		t.Fatalf("vault policy write firefly-reader -: %v\n%s", err, out)
	}

	// One token made with the CLI, one with the API.
	cliTok := ctCLISecret(t, v, v.token, "token", "create", "-policy=firefly-reader", "-ttl=10m", "-format=json")
	if cliTok.Auth == nil || cliTok.Auth.ClientToken == "" {
		t.Fatalf("vault token create returned no client token: %+v", cliTok)
	}
	if p := cliTok.Auth.Policies; !slices.Contains(p, "firefly-reader") || slices.Contains(p, "root") {
		t.Fatalf("vault token create -policy=firefly-reader made a token with policies %v", p)
	}
	apiTok, err := v.client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"firefly-reader"}, TTL: "10m"})
	if err != nil || apiTok.Auth == nil {
		t.Fatalf("API token create: %v, %+v", err, apiTok)
	}
	app := ctClientAs(t, v, apiTok.Auth.ClientToken)
	appCLI := func(stdin string, args ...string) (string, error) {
		return v.cliAs(cliTok.Auth.ClientToken, stdin, args...)
	}

	var fireflyToken string
	t.Run("reading adobe/creds/firefly is allowed", func(t *testing.T) {
		start := time.Now()
		out, err := appCLI("", "read", "-format=json", "adobe/creds/firefly")
		if err != nil {
			t.Fatalf("vault read adobe/creds/firefly with the policy token: %v\n%s", err, out)
		}
		var s api.Secret
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatalf("vault read -format=json adobe/creds/firefly: %v\n%s", err, out)
		}
		tok := ctCheckLease(t, emu, &s, start, ctScopesFirefly)
		fireflyToken = tok.AccessToken

		a, err := app.Logical().Read("adobe/creds/firefly")
		if err != nil {
			t.Fatalf("API read adobe/creds/firefly with the policy token: %v", err)
		}
		ctCheckLease(t, emu, a, start, ctScopesFirefly)
		if a.Data["access_token"] != fireflyToken {
			t.Errorf("the two policy tokens got different shared Firefly tokens")
		}
	})

	emu.ResetStats()
	denied := []struct {
		name string
		cli  []string
		api  func() error
	}{
		{"read adobe/config", []string{"read", "adobe/config"},
			func() error { _, err := app.Logical().Read("adobe/config"); return err }},
		{"write adobe/config", []string{"write", "adobe/config", "scopes=openid"},
			func() error {
				_, err := app.Logical().Write("adobe/config", map[string]any{"scopes": "openid"})
				return err
			}},
		{"read adobe/creds/other", []string{"read", "adobe/creds/other"},
			func() error { _, err := app.Logical().Read("adobe/creds/other"); return err }},
		{"read adobe/creds", []string{"read", "adobe/creds"},
			func() error { _, err := app.Logical().Read("adobe/creds"); return err }},
		{"write adobe/roles/firefly", []string{"write", "adobe/roles/firefly", "ttl=1m"},
			func() error {
				_, err := app.Logical().Write("adobe/roles/firefly", map[string]any{"ttl": "1m"})
				return err
			}},
		{"read adobe/roles/firefly", []string{"read", "adobe/roles/firefly"},
			func() error { _, err := app.Logical().Read("adobe/roles/firefly"); return err }},
		{"list adobe/roles", []string{"list", "adobe/roles"},
			func() error { _, err := app.Logical().List("adobe/roles"); return err }},
		{"delete adobe/roles/other", []string{"delete", "adobe/roles/other"},
			func() error { _, err := app.Logical().Delete("adobe/roles/other"); return err }},
		{"read adobe/info", []string{"read", "adobe/info"},
			func() error { _, err := app.Logical().Read("adobe/info"); return err }},
		{"read adobe/metrics", []string{"read", "adobe/metrics"},
			func() error { _, err := app.Logical().Read("adobe/metrics"); return err }},
		{"write adobe/config/rotate-root", []string{"write", "-f", "adobe/config/rotate-root"},
			func() error { _, err := app.Logical().Write("adobe/config/rotate-root", nil); return err }},
	}
	for _, d := range denied {
		t.Run(d.name+" is denied", func(t *testing.T) {
			out, err := appCLI("", d.cli...)
			if err == nil {
				t.Errorf("vault %s with the policy token succeeded:\n%s", strings.Join(d.cli, " "), out)
			} else if !strings.Contains(out, "Code: 403") || !strings.Contains(out, "permission denied") {
				t.Errorf("vault %s with the policy token: want 403 permission denied, got:\n%s", strings.Join(d.cli, " "), out)
			}
			msg := ctResponseError(t, d.api(), 403, fmt.Sprintf("API %s with the policy token", d.name))
			if !strings.Contains(msg, "permission denied") {
				t.Errorf("API %s: 403 without \"permission denied\": %s", d.name, msg)
			}
		})
	}

	t.Run("denied requests changed nothing and minted nothing", func(t *testing.T) {
		if n := emu.Stats().TokenRequests; n != 0 {
			t.Errorf("denied requests made %d IMS token requests", n)
		}
		if n := len(ctTokensFor(emu, ctScopesOrgs)); n != 0 {
			t.Errorf("the emulator issued %d tokens for the other role's scopes", n)
		}
		r, err := v.client.Logical().Read("adobe/roles/firefly")
		if err != nil || r == nil {
			t.Fatalf("root read adobe/roles/firefly: %v, %v", r, err)
		}
		if ttl := ctInt(t, r.Data["ttl"], "ttl"); ttl != 0 {
			t.Errorf("a denied write changed the firefly role's ttl to %d", ttl)
		}
		if s, err := v.client.Logical().Read("adobe/roles/other"); err != nil || s == nil {
			t.Errorf("a denied delete removed the other role: %v, %v", s, err)
		}
		c, err := v.client.Logical().Read("adobe/config")
		if err != nil || c == nil {
			t.Fatalf("root read adobe/config: %v, %v", c, err)
		}
		if got := ctStrings(t, c.Data["scopes"], "scopes"); !slices.Equal(got, strings.Split(fireflyScopes, ",")) {
			t.Errorf("a denied write changed the config's scopes to %v", got)
		}
		if fireflyToken != "" && !emu.TokenValid(fireflyToken) {
			t.Errorf("the Firefly token stopped being valid")
		}
	})

	t.Run("the root token still reads the other role", func(t *testing.T) {
		// The refusals above came from the policy, not from a broken role.
		start := time.Now()
		s, err := v.client.Logical().Read("adobe/creds/other")
		if err != nil {
			t.Fatalf("root read adobe/creds/other: %v", err)
		}
		ctCheckLease(t, emu, s, start, ctScopesOrgs)
	})
}
