package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// Scope sets used by the contract tests: all are subsets of fireflyScopes,
// and differ from it and from each other, so each has its own shared token.
const (
	ctScopesFirefly  = "openid,AdobeID,firefly_api,ff_apis"
	ctScopesOrgs     = "openid,AdobeID,read_organizations"
	ctScopesSession  = "openid,session"
	ctWrongSecret    = "p8e-WrNg4kP8sD2fG6hJ9lZ3xC7vB1nM"
	ctLeaseLookupDir = "sys/leases/lookup/adobe/creds/"
)

// ctCLISecret runs a vault CLI command with -format=json inserted after the
// subcommand words and decodes its output as an api.Secret.
func ctCLISecret(t *testing.T, v *vaultServer, token string, args ...string) *api.Secret {
	t.Helper()
	out, err := v.cliAs(token, "", args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	var s api.Secret
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("vault %s: output is not a JSON secret: %v\n%s", strings.Join(args, " "), err, out)
	}
	return &s
}

// ctCLIFails runs a vault CLI command that must fail and returns its output.
func ctCLIFails(t *testing.T, v *vaultServer, token, stdin string, args ...string) string {
	t.Helper()
	out, err := v.cliAs(token, stdin, args...)
	if err == nil {
		t.Fatalf("vault %s succeeded, want an error:\n%s", strings.Join(args, " "), out)
	}
	return out
}

// ctResponseError asserts err is a Vault API error with the given status and
// returns its joined messages.
func ctResponseError(t *testing.T, err error, status int, what string) string {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded, want HTTP %d", what, status)
	}
	var re *api.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("%s: error %v is not an *api.ResponseError", what, err)
	}
	if re.StatusCode != status {
		t.Fatalf("%s: HTTP %d, want %d: %v", what, re.StatusCode, status, err)
	}
	return strings.Join(re.Errors, "; ")
}

// ctClientAs returns an API client for v that uses token.
func ctClientAs(t *testing.T, v *vaultServer, token string) *api.Client {
	t.Helper()
	c, err := v.client.Clone()
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(token)
	return c
}

// ctSortedScopes turns a comma-separated scope list into a sorted slice.
func ctSortedScopes(scopes string) []string {
	s := strings.Split(scopes, ",")
	slices.Sort(s)
	return s
}

// ctEmuToken finds the emulator's record of an access token.
func ctEmuToken(t *testing.T, emu *emulator, access string) imsemu.IssuedToken {
	t.Helper()
	if access == "" {
		t.Fatal("empty access_token")
	}
	for _, it := range emu.Tokens() {
		if it.AccessToken == access {
			return it
		}
	}
	t.Fatalf("access_token %.20s... was not issued by the IMS emulator", access)
	return imsemu.IssuedToken{}
}

// ctTokensFor returns the emulator tokens issued for a scope set, in any order.
func ctTokensFor(emu *emulator, scopes string) []imsemu.IssuedToken {
	want := ctSortedScopes(scopes)
	var out []imsemu.IssuedToken
	for _, it := range emu.Tokens() {
		got := slices.Clone(it.Scopes)
		slices.Sort(got)
		if slices.Equal(got, want) {
			out = append(out, it)
		}
	}
	return out
}

// ctStrings converts a JSON list ([]any of strings) to []string.
func ctStrings(t *testing.T, v any, what string) []string {
	t.Helper()
	list, ok := v.([]any)
	if !ok {
		t.Fatalf("%s is %T (%v), want a list", what, v, v)
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			t.Fatalf("%s has a %T item %v, want strings", what, x, x)
		}
		out = append(out, s)
	}
	return out
}

// ctInt reads a JSON number (float64 or json.Number) as an int64.
func ctInt(t *testing.T, v any, what string) int64 {
	t.Helper()
	switch n := v.(type) {
	case json.Number:
		i, err := n.Int64()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		return i
	case float64:
		return int64(n)
	}
	t.Fatalf("%s is %T (%v), want a number", what, v, v)
	return 0
}

// ctExpiresAt parses a creds response's expires_at, which must be RFC 3339 in UTC.
func ctExpiresAt(t *testing.T, s *api.Secret) time.Time {
	t.Helper()
	raw, _ := s.Data["expires_at"].(string)
	ts, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		t.Fatalf("expires_at %q is not RFC 3339: %v", raw, err)
	}
	if !strings.HasSuffix(raw, "Z") || ts.Location() != time.UTC {
		t.Fatalf("expires_at %q is not in UTC (no Z suffix)", raw)
	}
	return ts
}

// ctLeaseExpireTime looks a lease up through the API and returns its expire_time.
func ctLeaseExpireTime(t *testing.T, v *vaultServer, leaseID string) time.Time {
	t.Helper()
	s, err := v.client.Sys().Lookup(leaseID)
	if err != nil {
		t.Fatalf("looking up lease %s: %v", leaseID, err)
	}
	raw, _ := s.Data["expire_time"].(string)
	ts, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Fatalf("lease %s expire_time %q: %v", leaseID, raw, err)
	}
	return ts
}

// ctCheckLease checks what every creds response must be: a renewable lease
// under adobe/creds/ with a positive TTL, a bearer token of the emulator with
// the asked scopes, whose lease ends before the token does.
func ctCheckLease(t *testing.T, emu *emulator, s *api.Secret, readStart time.Time, scopes string) imsemu.IssuedToken {
	t.Helper()
	if !strings.HasPrefix(s.LeaseID, "adobe/creds") {
		t.Errorf("lease_id %q is not under adobe/creds", s.LeaseID)
	}
	if !s.Renewable {
		t.Errorf("lease %s is not renewable", s.LeaseID)
	}
	if s.LeaseDuration <= 0 {
		t.Fatalf("lease_duration %d, want > 0", s.LeaseDuration)
	}
	access, _ := s.Data["access_token"].(string)
	tok := ctEmuToken(t, emu, access)
	if !emu.TokenValid(access) {
		t.Errorf("the emulator says the token of lease %s is not valid", s.LeaseID)
	}
	if tt, _ := s.Data["token_type"].(string); !strings.EqualFold(tt, "bearer") {
		t.Errorf("token_type %q, want bearer", tt)
	}
	got := ctStrings(t, s.Data["scopes"], "scopes")
	slices.Sort(got)
	if want := ctSortedScopes(scopes); !slices.Equal(got, want) {
		t.Errorf("scopes %v, want %v", got, want)
	}
	emuScopes := slices.Clone(tok.Scopes)
	slices.Sort(emuScopes)
	if want := ctSortedScopes(scopes); !slices.Equal(emuScopes, want) {
		t.Errorf("the emulator minted the token with scopes %v, want %v", emuScopes, want)
	}
	// expires_at is RFC 3339 (whole seconds) in UTC and agrees with IMS's expiry.
	exp := ctExpiresAt(t, s)
	if exp.After(tok.ExpiresAt) || tok.ExpiresAt.Sub(exp) > 3*time.Second {
		t.Errorf("expires_at %s, but the emulator expires the token at %s", exp, tok.ExpiresAt.UTC().Format(time.RFC3339Nano))
	}
	// The lease never outlives the token.
	lease := time.Duration(s.LeaseDuration) * time.Second
	if lease > tok.ExpiresAt.Sub(tok.IssuedAt) {
		t.Errorf("lease_duration %s exceeds the token's whole life expires_in=%s", lease, tok.ExpiresAt.Sub(tok.IssuedAt))
	}
	if end := readStart.Add(lease); end.After(tok.ExpiresAt) {
		t.Errorf("lease of %s read at %s ends after the token expires at %s", lease, readStart.Format(time.RFC3339Nano), tok.ExpiresAt.Format(time.RFC3339Nano))
	}
	return tok
}

// TestConfigSecretIsWriteOnlyAndBadWritesChangeNothing covers the config
// path through the CLI and the API: the secret goes in on stdin and never
// comes back out, partial updates keep the other fields, and invalid input or
// a credential IMS refuses is answered with a 400 that says why, leaving the
// stored config as it was.
func TestConfigSecretIsWriteOnlyAndBadWritesChangeNothing(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()

	t.Run("creds before config says to configure", func(t *testing.T) {
		_, err := v.client.Logical().Read("adobe/creds")
		msg := ctResponseError(t, err, 400, "reading adobe/creds before config")
		if !strings.Contains(msg, "not configured") {
			t.Errorf("error does not say the engine is not configured: %s", msg)
		}
	})

	t.Run("wrong secret on create is refused with invalid_client and stores nothing", func(t *testing.T) {
		before := emu.Stats().TokenErrors
		out := ctCLIFails(t, v, v.token, ctWrongSecret, "write", "adobe/config", "client_id="+testClientID,
			"client_secret=-", "scopes="+fireflyScopes, "ims_url="+emu.URL)
		if !strings.Contains(out, "invalid_client") || !strings.Contains(out, "Code: 400") {
			t.Errorf("refusal does not carry HTTP 400 and IMS's invalid_client:\n%s", out)
		}
		if strings.Contains(out, ctWrongSecret) {
			t.Errorf("the refusal quotes the client secret")
		}
		if got := emu.Stats().TokenErrors; got != before+1 {
			t.Errorf("emulator refused %d token requests, want exactly 1 (the verification)", got-before)
		}
		s, err := v.client.Logical().Read("adobe/config")
		if err != nil {
			t.Fatal(err)
		}
		if s != nil {
			t.Fatalf("a refused config was stored: %v", s.Data)
		}
		if out := ctCLIFails(t, v, v.token, "", "read", "adobe/config"); !strings.Contains(out, "No value found") {
			t.Errorf("vault read adobe/config after a refused create:\n%s", out)
		}
	})

	t.Run("create through the CLI with the secret on stdin", func(t *testing.T) {
		out, err := v.cliAs(v.token, testClientSecret, "write", "adobe/config", "client_id="+testClientID,
			"client_secret=-", "scopes="+fireflyScopes, "ims_url="+emu.URL)
		if err != nil {
			t.Fatalf("vault write adobe/config: %v\n%s", err, out)
		}
		if !strings.Contains(out, "Success!") {
			t.Errorf("vault write adobe/config:\n%s", out)
		}
		if strings.Contains(out, testClientSecret) {
			t.Errorf("vault write echoes the client secret")
		}
	})

	checkConfig := func(t *testing.T, wantScopes string) map[string]any {
		t.Helper()
		table := v.mustCLI("read", "adobe/config")
		raw := v.mustCLI("read", "-format=json", "adobe/config")
		s, err := v.client.Logical().Read("adobe/config")
		if err != nil || s == nil {
			t.Fatalf("API read adobe/config: %v, %v", s, err)
		}
		apiJSON, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		for name, text := range map[string]string{"vault read": table, "vault read -format=json": raw, "API read": string(apiJSON)} {
			if strings.Contains(text, testClientSecret) {
				t.Errorf("%s adobe/config shows the client secret", name)
				continue
			}
			for _, want := range []string{"client_id", testClientID, "scopes", "ims_url", emu.URL} {
				if !strings.Contains(text, want) {
					t.Errorf("%s adobe/config lacks %q:\n%s", name, want, text)
				}
			}
		}
		if _, ok := s.Data["client_secret"]; ok {
			t.Errorf("API read adobe/config has a client_secret field (fields: %v)", slices.Sorted(maps.Keys(s.Data)))
		}
		if got := s.Data["client_id"]; got != testClientID {
			t.Errorf("client_id %v, want %s", got, testClientID)
		}
		if got := s.Data["ims_url"]; got != emu.URL {
			t.Errorf("ims_url %v, want %s", got, emu.URL)
		}
		if got := ctStrings(t, s.Data["scopes"], "scopes"); !slices.Equal(got, strings.Split(wantScopes, ",")) {
			t.Errorf("scopes %v, want %s", got, wantScopes)
		}
		var cli api.Secret
		if err := json.Unmarshal([]byte(raw), &cli); err != nil {
			t.Fatalf("vault read -format=json adobe/config: %v\n%s", err, raw)
		}
		// Compared as JSON: the API client decodes numbers as json.Number,
		// encoding/json as float64.
		cliData, _ := json.Marshal(cli.Data)
		apiData, _ := json.Marshal(s.Data)
		if string(cliData) != string(apiData) {
			t.Errorf("CLI and API disagree on adobe/config:\nCLI %s\nAPI %s", cliData, apiData)
		}
		return s.Data
	}

	var stored map[string]any
	t.Run("read through CLI and API never shows the secret", func(t *testing.T) {
		stored = checkConfig(t, fireflyScopes)
	})

	t.Run("partial update through the API changes only scopes", func(t *testing.T) {
		if _, err := v.client.Logical().Write("adobe/config", map[string]any{"scopes": ctScopesFirefly}); err != nil {
			t.Fatalf("API write adobe/config scopes only: %v", err)
		}
		got := checkConfig(t, ctScopesFirefly)
		for k, want := range stored {
			if k != "scopes" && !reflect.DeepEqual(got[k], want) {
				t.Errorf("updating scopes changed %s from %v to %v", k, want, got[k])
			}
		}
		// The stored secret survived the partial update: creds still mint.
		start := time.Now()
		s, err := v.client.Logical().Read("adobe/creds")
		if err != nil {
			t.Fatalf("API read adobe/creds after the partial update: %v", err)
		}
		ctCheckLease(t, emu, s, start, ctScopesFirefly)
		stored = got
	})

	t.Run("invalid input is a 400 that names the problem and changes nothing", func(t *testing.T) {
		cases := []struct {
			name string
			data map[string]any
			want []string
		}{
			{"space in scopes", map[string]any{"scopes": "a b"}, []string{"scopes", "space"}},
			{"unknown field", map[string]any{"scope": "openid"}, []string{"unknown field", "scope"}},
			{"plain http to a remote host", map[string]any{"ims_url": "http://ims.example.com"}, []string{"ims_url", "https"}},
			{"new client_id without its secret", map[string]any{"client_id": "another-client"}, []string{"client_id", "client_secret"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := v.client.Logical().Write("adobe/config", c.data)
				msg := ctResponseError(t, err, 400, fmt.Sprintf("API write adobe/config %v", c.data))
				for _, w := range c.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error does not mention %q: %s", w, msg)
					}
				}
				if got := checkConfig(t, ctScopesFirefly); !reflect.DeepEqual(got, stored) {
					t.Errorf("a refused write changed the config:\nbefore %v\nafter  %v", stored, got)
				}
			})
		}
		t.Run("CLI space in scopes", func(t *testing.T) {
			out := ctCLIFails(t, v, v.token, "", "write", "adobe/config", "scopes=a b")
			if !strings.Contains(out, "Code: 400") || !strings.Contains(out, "space") {
				t.Errorf("vault write adobe/config scopes=\"a b\" is not a 400 naming the space:\n%s", out)
			}
			if got := checkConfig(t, ctScopesFirefly); !reflect.DeepEqual(got, stored) {
				t.Errorf("a refused write changed the config:\nbefore %v\nafter  %v", stored, got)
			}
		})
	})

	t.Run("wrong secret on update is refused with invalid_client and the old secret kept", func(t *testing.T) {
		out := ctCLIFails(t, v, v.token, ctWrongSecret, "write", "adobe/config", "client_secret=-")
		if !strings.Contains(out, "invalid_client") || !strings.Contains(out, "Code: 400") {
			t.Errorf("refusal does not carry HTTP 400 and IMS's invalid_client:\n%s", out)
		}
		if strings.Contains(out, ctWrongSecret) {
			t.Errorf("the refusal quotes the client secret")
		}
		_, err := v.client.Logical().Write("adobe/config", map[string]any{"client_secret": ctWrongSecret})
		msg := ctResponseError(t, err, 400, "API write adobe/config with a wrong client_secret")
		if !strings.Contains(msg, "invalid_client") || strings.Contains(msg, ctWrongSecret) {
			t.Errorf("API refusal should name invalid_client and not quote the secret: %s", msg)
		}
		if got := checkConfig(t, ctScopesFirefly); !reflect.DeepEqual(got, stored) {
			t.Errorf("a refused write changed the config:\nbefore %v\nafter  %v", stored, got)
		}
		// A write that verifies with the stored secret only succeeds if the
		// right secret is still the one stored.
		if _, err := v.client.Logical().Write("adobe/config", map[string]any{"scopes": fireflyScopes}); err != nil {
			t.Fatalf("verifying with the stored secret after a refused update: %v", err)
		}
		checkConfig(t, fireflyScopes)
	})

	t.Run("server log never holds a client secret", func(t *testing.T) {
		log := v.logText()
		for _, s := range []string{testClientSecret, ctWrongSecret} {
			if strings.Contains(log, s) {
				t.Errorf("the Vault log %s contains the client secret %q", v.logPath, s)
			}
		}
	})
}

// TestRolesCreateReadListUpdateDelete manages roles through both the CLI and
// the API, including refusals of roles the config cannot serve.
func TestRolesCreateReadListUpdateDelete(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)

	listCLI := func(t *testing.T) []string {
		t.Helper()
		out, err := v.cli("list", "-format=json", "adobe/roles")
		if err != nil {
			// An empty list is exit status 2 with "{}" (or "No value found").
			if o := strings.TrimSpace(out); o == "{}" || strings.Contains(o, "No value found") {
				return nil
			}
			t.Fatalf("vault list adobe/roles: %v\n%s", err, out)
		}
		var names []string
		if err := json.Unmarshal([]byte(out), &names); err != nil {
			t.Fatalf("vault list -format=json adobe/roles: %v\n%s", err, out)
		}
		slices.Sort(names)
		return names
	}
	listAPI := func(t *testing.T) []string {
		t.Helper()
		s, err := v.client.Logical().List("adobe/roles")
		if err != nil {
			t.Fatalf("API list adobe/roles: %v", err)
		}
		if s == nil {
			return nil
		}
		names := ctStrings(t, s.Data["keys"], "keys")
		slices.Sort(names)
		return names
	}

	t.Run("create through the CLI and read through both", func(t *testing.T) {
		v.mustCLI("write", "adobe/roles/firefly", "scopes="+ctScopesFirefly, "mode=dedicated", "ttl=30m", "max_ttl=2h")
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/roles/firefly")
		a, err := v.client.Logical().Read("adobe/roles/firefly")
		if err != nil || a == nil {
			t.Fatalf("API read adobe/roles/firefly: %v, %v", a, err)
		}
		for name, data := range map[string]map[string]any{"CLI": s.Data, "API": a.Data} {
			if got := ctStrings(t, data["scopes"], name+" scopes"); !slices.Equal(got, strings.Split(ctScopesFirefly, ",")) {
				t.Errorf("%s: scopes %v, want %s", name, got, ctScopesFirefly)
			}
			if data["mode"] != "dedicated" {
				t.Errorf("%s: mode %v, want dedicated", name, data["mode"])
			}
			if got := ctInt(t, data["ttl"], "ttl"); got != 1800 {
				t.Errorf("%s: ttl %d, want 1800", name, got)
			}
			if got := ctInt(t, data["max_ttl"], "max_ttl"); got != 7200 {
				t.Errorf("%s: max_ttl %d, want 7200", name, got)
			}
		}
	})

	t.Run("create through the API gets the defaults", func(t *testing.T) {
		if _, err := v.client.Logical().Write("adobe/roles/analytics", map[string]any{"scopes": ctScopesOrgs}); err != nil {
			t.Fatalf("API write adobe/roles/analytics: %v", err)
		}
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/roles/analytics")
		if s.Data["mode"] != "shared" {
			t.Errorf("mode %v, want the default shared", s.Data["mode"])
		}
		if got := ctInt(t, s.Data["ttl"], "ttl"); got != 0 {
			t.Errorf("ttl %d, want 0", got)
		}
	})

	t.Run("list through both", func(t *testing.T) {
		want := []string{"analytics", "firefly"}
		if got := listCLI(t); !slices.Equal(got, want) {
			t.Errorf("vault list adobe/roles: %v, want %v", got, want)
		}
		if got := listAPI(t); !slices.Equal(got, want) {
			t.Errorf("API list adobe/roles: %v, want %v", got, want)
		}
	})

	t.Run("update changes only the fields given", func(t *testing.T) {
		if _, err := v.client.Logical().Write("adobe/roles/firefly", map[string]any{"ttl": "10m"}); err != nil {
			t.Fatalf("API update adobe/roles/firefly ttl: %v", err)
		}
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/roles/firefly")
		if got := ctInt(t, s.Data["ttl"], "ttl"); got != 600 {
			t.Errorf("ttl %d, want 600", got)
		}
		if s.Data["mode"] != "dedicated" || ctInt(t, s.Data["max_ttl"], "max_ttl") != 7200 {
			t.Errorf("updating ttl changed other fields: %v", s.Data)
		}
		if got := ctStrings(t, s.Data["scopes"], "scopes"); !slices.Equal(got, strings.Split(ctScopesFirefly, ",")) {
			t.Errorf("updating ttl changed scopes to %v", got)
		}
	})

	t.Run("invalid roles are a 400 that names the problem", func(t *testing.T) {
		cases := []struct {
			name string
			data map[string]any
			want []string
		}{
			{"scope the config lacks", map[string]any{"scopes": "openid,photoshop_api"}, []string{"photoshop_api", "config"}},
			{"unknown mode", map[string]any{"scopes": ctScopesOrgs, "mode": "exclusive"}, []string{"mode", "exclusive"}},
			{"unknown field", map[string]any{"scopes": ctScopesOrgs, "scope": "openid"}, []string{"unknown field", "scope"}},
			{"no scopes", map[string]any{"mode": "shared"}, []string{"scopes"}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				_, err := v.client.Logical().Write("adobe/roles/broken", c.data)
				msg := ctResponseError(t, err, 400, fmt.Sprintf("API write adobe/roles/broken %v", c.data))
				for _, w := range c.want {
					if !strings.Contains(msg, w) {
						t.Errorf("error does not mention %q: %s", w, msg)
					}
				}
			})
		}
		out := ctCLIFails(t, v, v.token, "", "write", "adobe/roles/broken", "scopes=openid,photoshop_api")
		if !strings.Contains(out, "Code: 400") || !strings.Contains(out, "photoshop_api") {
			t.Errorf("vault write of a role with a scope the config lacks:\n%s", out)
		}
		if got := listAPI(t); slices.Contains(got, "broken") {
			t.Errorf("a refused role was stored: %v", got)
		}
	})

	t.Run("delete through the CLI and the API", func(t *testing.T) {
		v.mustCLI("delete", "adobe/roles/firefly")
		if got := listCLI(t); !slices.Equal(got, []string{"analytics"}) {
			t.Errorf("after deleting firefly, vault list adobe/roles: %v", got)
		}
		if s, err := v.client.Logical().Read("adobe/roles/firefly"); err != nil || s != nil {
			t.Errorf("API read of a deleted role: %v, %v", s, err)
		}
		if _, err := v.client.Logical().Delete("adobe/roles/analytics"); err != nil {
			t.Fatalf("API delete adobe/roles/analytics: %v", err)
		}
		if got := listAPI(t); len(got) != 0 {
			t.Errorf("after deleting every role, API list adobe/roles: %v", got)
		}
		if got := listCLI(t); len(got) != 0 {
			t.Errorf("after deleting every role, vault list adobe/roles: %v", got)
		}
		_, err := v.client.Logical().Read("adobe/creds/analytics")
		if msg := ctResponseError(t, err, 400, "reading creds of a deleted role"); !strings.Contains(msg, "analytics") {
			t.Errorf("error does not name the missing role: %s", msg)
		}
	})
}

// TestSharedCredsReuseOneTokenPerScopeSet reads shared-mode creds through the
// CLI and the API: one IMS token per scope set, leases that end before it,
// role ttl capping the lease, and revocation that leaves the token alone.
func TestSharedCredsReuseOneTokenPerScopeSet(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes="+ctScopesFirefly)
	// Same scope set in another order, with a short lease.
	v.mustCLI("write", "adobe/roles/short", "scopes=ff_apis,firefly_api,AdobeID,openid", "ttl=30s")

	var first *api.Secret
	var tok imsemu.IssuedToken
	t.Run("two reads share one token and one IMS request", func(t *testing.T) {
		emu.ResetStats()
		start := time.Now()
		first = ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/firefly")
		tok = ctCheckLease(t, emu, first, start, ctScopesFirefly)

		start = time.Now()
		second, err := v.client.Logical().Read("adobe/creds/firefly")
		if err != nil {
			t.Fatalf("API read adobe/creds/firefly: %v", err)
		}
		ctCheckLease(t, emu, second, start, ctScopesFirefly)
		if second.Data["access_token"] != first.Data["access_token"] {
			t.Errorf("two shared reads returned different tokens")
		}
		if second.LeaseID == first.LeaseID {
			t.Errorf("two reads returned the same lease %s", first.LeaseID)
		}
		if n := len(ctTokensFor(emu, ctScopesFirefly)); n != 1 {
			t.Errorf("the emulator issued %d tokens for %s, want 1", n, ctScopesFirefly)
		}
		if n := emu.Stats().TokenRequests; n != 1 {
			t.Errorf("the emulator saw %d token requests for two shared reads, want 1", n)
		}
	})
	if first == nil {
		t.FailNow()
	}

	t.Run("lease is bounded by the token's life and expires_at agrees with IMS", func(t *testing.T) {
		if tok.ExpiresAt.Sub(tok.IssuedAt) != time.Hour {
			t.Fatalf("the emulator token lives %s, want 1h", tok.ExpiresAt.Sub(tok.IssuedAt))
		}
		if first.LeaseDuration > 3600 {
			t.Errorf("lease_duration %d > expires_in 3600", first.LeaseDuration)
		}
		// A role without ttl gets close to the token's life: the margin is small.
		if first.LeaseDuration < 1800 {
			t.Errorf("lease_duration %d is far below the token's 3600s life", first.LeaseDuration)
		}
		if end := ctLeaseExpireTime(t, v, first.LeaseID); end.After(tok.ExpiresAt) {
			t.Errorf("lease expire_time %s is after the token's expiry %s", end, tok.ExpiresAt)
		}
		exp := ctExpiresAt(t, first)
		if d := tok.ExpiresAt.Sub(exp); d < 0 || d > 3*time.Second {
			t.Errorf("expires_at %s is %s away from the emulator's expiry %s", exp, d, tok.ExpiresAt)
		}
	})

	t.Run("role ttl=30s caps the lease and reuses the scope set's token", func(t *testing.T) {
		before := emu.Stats().TokenRequests
		start := time.Now()
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/short")
		ctCheckLease(t, emu, s, start, ctScopesFirefly)
		if s.LeaseDuration > 30 || s.LeaseDuration < 20 {
			t.Errorf("lease_duration %d, want at most the role's ttl of 30 (and close to it)", s.LeaseDuration)
		}
		if end := ctLeaseExpireTime(t, v, s.LeaseID); end.After(start.Add(31 * time.Second)) {
			t.Errorf("lease expire_time %s is more than 30s after the read at %s", end, start)
		}
		if s.Data["access_token"] != first.Data["access_token"] {
			t.Errorf("a role with the same scope set in another order got another token")
		}
		if got := emu.Stats().TokenRequests; got != before {
			t.Errorf("reading the same scope set through another role made %d IMS requests, want 0", got-before)
		}
	})

	t.Run("creds without a role is shared too", func(t *testing.T) {
		before := len(ctTokensFor(emu, fireflyScopes))
		start := time.Now()
		a := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds")
		ctCheckLease(t, emu, a, start, fireflyScopes)
		b, err := v.client.Logical().Read("adobe/creds")
		if err != nil {
			t.Fatalf("API read adobe/creds: %v", err)
		}
		ctCheckLease(t, emu, b, start, fireflyScopes)
		if a.Data["access_token"] != b.Data["access_token"] {
			t.Errorf("two reads of adobe/creds returned different tokens")
		}
		if a.Data["access_token"] == first.Data["access_token"] {
			t.Errorf("adobe/creds and a role with fewer scopes got the same token")
		}
		if n := len(ctTokensFor(emu, fireflyScopes)) - before; n > 1 {
			t.Errorf("two reads of adobe/creds minted %d tokens, want at most 1", n)
		}
	})

	t.Run("revoking a shared lease leaves the token alone", func(t *testing.T) {
		access := first.Data["access_token"].(string)
		v.mustCLI("lease", "revoke", "-sync", first.LeaseID)
		if _, err := v.client.Sys().Lookup(first.LeaseID); err == nil {
			t.Errorf("lease %s is still known after vault lease revoke -sync", first.LeaseID)
		}
		if !emu.TokenValid(access) {
			t.Errorf("revoking one shared lease invalidated the token every reader shares")
		}
		if n := emu.Stats().InvalidateRequests; n != 0 {
			t.Errorf("revoking a shared lease made %d invalidate calls, want 0", n)
		}
		s, err := v.client.Logical().Read("adobe/creds/firefly")
		if err != nil {
			t.Fatal(err)
		}
		if s.Data["access_token"] != access {
			t.Errorf("after revoking a shared lease the next read got another token")
		}
	})
}

// TestDedicatedCredsDieWithTheirLease reads dedicated-mode creds and revokes
// their leases one at a time and by prefix; each revocation invalidates
// exactly its own token at IMS.
func TestDedicatedCredsDieWithTheirLease(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/job", "scopes="+ctScopesFirefly, "mode=dedicated")
	v.mustCLI("write", "adobe/roles/web", "scopes="+ctScopesOrgs)

	emu.ResetStats()
	start := time.Now()
	s1 := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/job")
	ctCheckLease(t, emu, s1, start, ctScopesFirefly)
	s2, err := v.client.Logical().Read("adobe/creds/job")
	if err != nil {
		t.Fatalf("API read adobe/creds/job: %v", err)
	}
	ctCheckLease(t, emu, s2, start, ctScopesFirefly)
	tok1, _ := s1.Data["access_token"].(string)
	tok2, _ := s2.Data["access_token"].(string)

	t.Run("each read mints its own token", func(t *testing.T) {
		if tok1 == tok2 {
			t.Fatal("two dedicated reads returned the same token")
		}
		if n := emu.Stats().TokenRequests; n != 2 {
			t.Errorf("two dedicated reads made %d IMS token requests, want 2", n)
		}
	})

	t.Run("revoking one lease invalidates its token only", func(t *testing.T) {
		v.mustCLI("lease", "revoke", "-sync", s1.LeaseID)
		eventually(t, 10*time.Second, "the revoked lease's token to be invalid at IMS", func() error {
			if emu.TokenValid(tok1) {
				return errors.New("still valid")
			}
			return nil
		})
		if !emu.TokenValid(tok2) {
			t.Errorf("revoking lease %s also invalidated the other lease's token", s1.LeaseID)
		}
		if _, err := v.client.Sys().Lookup(s1.LeaseID); err == nil {
			t.Errorf("lease %s is still known after revocation", s1.LeaseID)
		}
		if _, err := v.client.Sys().Lookup(s2.LeaseID); err != nil {
			t.Errorf("the other lease %s is gone too: %v", s2.LeaseID, err)
		}
	})

	t.Run("revoke -prefix ends every remaining lease", func(t *testing.T) {
		start := time.Now()
		s3 := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/job")
		ctCheckLease(t, emu, s3, start, ctScopesFirefly)
		tok3, _ := s3.Data["access_token"].(string)
		shared, err := v.client.Logical().Read("adobe/creds/web")
		if err != nil {
			t.Fatal(err)
		}
		sharedTok := ctCheckLease(t, emu, shared, start, ctScopesOrgs).AccessToken

		listed := v.mustCLI("list", ctLeaseLookupDir+"job/")
		for _, l := range []string{s2.LeaseID, s3.LeaseID} {
			if id := l[strings.LastIndex(l, "/")+1:]; !strings.Contains(listed, id) {
				t.Errorf("vault list %sjob/ lacks lease %s:\n%s", ctLeaseLookupDir, id, listed)
			}
		}

		v.mustCLI("lease", "revoke", "-sync", "-prefix", "adobe/creds/")
		eventually(t, 15*time.Second, "every adobe/creds lease to be gone and its dedicated token invalid", func() error {
			for _, role := range []string{"job", "web"} {
				if out, err := v.cli("list", ctLeaseLookupDir+role+"/"); err == nil {
					return fmt.Errorf("vault list %s%s/ still lists leases:\n%s", ctLeaseLookupDir, role, out)
				}
			}
			for _, l := range []string{s2.LeaseID, s3.LeaseID, shared.LeaseID} {
				if _, err := v.client.Sys().Lookup(l); err == nil {
					return fmt.Errorf("lease %s is still known", l)
				}
			}
			if emu.TokenValid(tok2) || emu.TokenValid(tok3) {
				return errors.New("a dedicated token is still valid at IMS")
			}
			return nil
		})
		if s, err := v.client.Logical().List(ctLeaseLookupDir + "job/"); err != nil || (s != nil && len(ctStrings(t, s.Data["keys"], "keys")) > 0) {
			t.Errorf("API list %sjob/ after revoke -prefix: %v, %v", ctLeaseLookupDir, s, err)
		}
		if !emu.TokenValid(sharedTok) {
			t.Errorf("revoking a shared lease by prefix invalidated the shared token")
		}
		if n := emu.Stats().Invalidated; n != 3 {
			t.Errorf("the emulator ended %d live tokens, want exactly the 3 dedicated ones", n)
		}
	})
}

// TestLeaseRenewalNeverOutlivesTheToken renews leases of short-lived (60s)
// tokens through the CLI and the API: whatever increment is asked, the lease
// never ends after the token, and a role ttl caps the first lease.
func TestLeaseRenewalNeverOutlivesTheToken(t *testing.T) {
	emu := startEmulator(t, 60*time.Second)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/nottl", "scopes="+ctScopesFirefly)
	v.mustCLI("write", "adobe/roles/ttl10", "scopes="+ctScopesSession, "mode=dedicated", "ttl=10s")

	checkRenewed := func(t *testing.T, leaseID string, renewStart time.Time, ttl int, tok imsemu.IssuedToken) {
		t.Helper()
		if ttl <= 0 {
			t.Errorf("renewed lease_duration %d, want > 0", ttl)
		}
		left := tok.ExpiresAt.Sub(renewStart)
		if time.Duration(ttl)*time.Second > left {
			t.Errorf("renewed lease_duration %ds exceeds the %s left before the token expires", ttl, left.Round(time.Millisecond))
		}
		if end := ctLeaseExpireTime(t, v, leaseID); end.After(tok.ExpiresAt) {
			t.Errorf("renewed lease expire_time %s is after the token's expiry %s", end.Format(time.RFC3339Nano), tok.ExpiresAt.Format(time.RFC3339Nano))
		}
	}

	t.Run("role without ttl renews up to the token's expiry only", func(t *testing.T) {
		start := time.Now()
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/nottl")
		tok := ctCheckLease(t, emu, s, start, ctScopesFirefly)
		if life := tok.ExpiresAt.Sub(tok.IssuedAt); life != 60*time.Second {
			t.Fatalf("the emulator token lives %s, want 60s", life)
		}
		if s.LeaseDuration > 60 || s.LeaseDuration < 30 {
			t.Errorf("lease_duration %d, want at most the token's 60s life and close to it", s.LeaseDuration)
		}

		renewStart := time.Now()
		r := ctCLISecret(t, v, v.token, "lease", "renew", "-format=json", s.LeaseID)
		if r.LeaseID != s.LeaseID {
			t.Errorf("vault lease renew returned lease %q, want %q", r.LeaseID, s.LeaseID)
		}
		checkRenewed(t, s.LeaseID, renewStart, r.LeaseDuration, tok)

		renewStart = time.Now()
		a, err := v.client.Sys().Renew(s.LeaseID, 3600)
		if err != nil {
			t.Fatalf("API renew %s by 1h: %v", s.LeaseID, err)
		}
		checkRenewed(t, s.LeaseID, renewStart, a.LeaseDuration, tok)
		t.Logf("no-ttl lease: first %ds, CLI renew %ds, API renew by 1h %ds; token expires in %s", s.LeaseDuration, r.LeaseDuration, a.LeaseDuration, time.Until(tok.ExpiresAt).Round(time.Second))
	})

	t.Run("role ttl=10s caps the lease and a renewal by 1h", func(t *testing.T) {
		start := time.Now()
		s := ctCLISecret(t, v, v.token, "read", "-format=json", "adobe/creds/ttl10")
		tok := ctCheckLease(t, emu, s, start, ctScopesSession)
		if s.LeaseDuration > 10 {
			t.Errorf("lease_duration %d exceeds the role's ttl of 10s", s.LeaseDuration)
		}

		renewStart := time.Now()
		r := ctCLISecret(t, v, v.token, "lease", "renew", "-format=json", "-increment=1h", s.LeaseID)
		checkRenewed(t, s.LeaseID, renewStart, r.LeaseDuration, tok)
		t.Logf("ttl=10s lease: first %ds, renewed by 1h to %ds; token expires in %s", s.LeaseDuration, r.LeaseDuration, time.Until(tok.ExpiresAt).Round(time.Second))
		if r.LeaseDuration >= 3600 {
			t.Errorf("renew -increment=1h granted %ds for a 60s token", r.LeaseDuration)
		}
		if r.LeaseDuration > 10 {
			t.Errorf("renew -increment=1h granted %ds past the role's ttl of 10s", r.LeaseDuration)
		}
		if !emu.TokenValid(tok.AccessToken) {
			t.Errorf("renewing a dedicated lease invalidated its token")
		}
	})
}
