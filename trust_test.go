package adobeims

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// attacker is a host that someone with update on config but without the
// client secret would like the plugin to talk to. It accepts the test
// credential, so that a plugin that did send it something would succeed.
type attacker struct {
	url      string
	requests atomic.Int64
}

func newAttacker(t *testing.T) *attacker {
	t.Helper()
	a := &attacker{}
	emu := imsemu.New(imsemu.Config{
		ClientID: testClientID, ClientSecret: testClientSecret,
		Scopes: append(strings.Split(testScopes+",read_organizations", ","), ims.ManagementScopes()...),
	})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		emu.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// TestConfigWriteCannotRedirectTheSecret holds the trust boundary: a write
// without client_secret that changes where the secret or its tokens go is
// refused, stores nothing and sends nothing, whichever field and however
// verify is set; rotate-root afterwards still talks only to the stored hosts.
func TestConfigWriteCannotRedirectTheSecret(t *testing.T) {
	cases := []struct {
		field string
		value func(a *attacker) string
	}{
		{keyIMSURL, func(a *attacker) string { return a.url }},
		{keyIOManagementURL, func(a *attacker) string { return a.url }},
		{keyClientID, func(*attacker) string { return "another-client" }},
	}
	for _, tc := range cases {
		for _, verify := range []bool{true, false} {
			t.Run(tc.field+"/verify="+map[bool]string{true: "true", false: "false"}[verify], func(t *testing.T) {
				e := newRotateEnv(t, rotateOptions{})
				e.configureForRotation(nil)
				a := newAttacker(t)
				before := e.stored()

				resp, err := e.write("config", map[string]any{tc.field: tc.value(a), keyVerify: verify})
				msg := e.mustFail(resp, err, "give client_secret in the same write", tc.field)
				if err != nil {
					t.Fatalf("want a 400 error response, got %v (%s)", err, msg)
				}
				after := e.stored()
				if after.IMSURL != before.IMSURL || after.IOManagementURL != before.IOManagementURL || after.ClientID != before.ClientID {
					t.Fatalf("the refused write changed the stored config: %+v", after)
				}

				e.mustOK(e.rotate())
				e.creds("creds")
				if n := a.requests.Load(); n != 0 {
					t.Fatalf("the other host received %d requests", n)
				}
			})
		}
	}
}

// TestConfigWriteWithTheSecretMayMoveHosts: giving the secret in the same
// write is what makes a move legitimate.
func TestConfigWriteWithTheSecretMayMoveHosts(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	a := newAttacker(t)

	e.mustOK(e.write("config", map[string]any{keyIMSURL: a.url, keyClientSecret: testClientSecret}))
	if a.requests.Load() == 0 {
		t.Fatal("verify did not mint at the new IMS URL")
	}
	if got := e.stored().IMSURL; got != a.url {
		t.Fatalf("ims_url is %q, want %q", got, a.url)
	}
	minted := a.requests.Load()
	e.b.cache.Purge()
	if err := dropPersistedTokens(t.Context(), e.storage); err != nil {
		t.Fatal(err)
	}
	e.creds("creds")
	if a.requests.Load() == minted {
		t.Fatal("creds did not mint at the new IMS URL")
	}
}

// TestConfigCreateMaySetHosts: the write that first stores the secret sets
// the hosts it goes to.
func TestConfigCreateMaySetHosts(t *testing.T) {
	e := newTestEnv(t)
	a := newAttacker(t)
	e.mustOK(e.write("config", map[string]any{
		keyClientID: testClientID, keyClientSecret: testClientSecret, keyScopes: testScopes,
		keyIMSURL: a.url, keyIOManagementURL: a.url,
	}))
	if a.requests.Load() == 0 {
		t.Fatal("verify did not mint at the given IMS URL")
	}
}

// TestConfigWriteSameHostNeedsNoSecret: restating the stored URL (in another
// spelling that parses to the same base) moves nothing.
func TestConfigWriteSameHostNeedsNoSecret(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("config", map[string]any{keyIMSURL: e.srv.URL + "/", keyScopes: testScopes}))
}

// TestEveryConfigFieldIsCheckedForRedirects writes every config field the
// schema has, one at a time and without client_secret, with a value that
// points at another host where the field takes one, and checks that nothing
// then reaches that host: a field added later that decides where the secret
// goes fails this test until checkSecretStaysHome covers it.
func TestEveryConfigFieldIsCheckedForRedirects(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	a := newAttacker(t)
	values := map[string]any{
		keyClientID: "another-client", keyScopes: testScopes, keyOrgID: imsemu.DefaultOrgID,
		keyCredentialID: imsemu.DefaultCredentialID, keyRotationPeriod: 0, keyVerify: true,
		keyRotationWindow: 0, keyDisableAutomatedRotation: false, keyPersistTokens: true, keyMaxConcurrent: 8,
	}
	for field, schema := range pathConfig(e.b).Fields {
		if field == keyClientSecret {
			continue
		}
		v, ok := values[field]
		if !ok {
			if schema.Type.String() != "string" {
				t.Fatalf("config field %q has no test value: add one that tries to redirect the secret", field)
			}
			v = a.url
		}
		resp, err := e.write("config", map[string]any{field: v})
		if err == nil && resp.IsError() {
			t.Logf("%s: refused: %v", field, resp.Error())
		}
	}
	e.mustOK(e.rotate())
	e.creds("creds")
	if n := a.requests.Load(); n != 0 {
		t.Fatalf("the other host received %d requests", n)
	}
	if got := e.stored(); !strings.HasPrefix(got.IMSURL, "http://127.0.0.1") || slices.Contains([]string{got.IMSURL, got.IOManagementURL}, a.url) {
		t.Fatalf("a host moved: %+v", got)
	}
}

// TestSecretScopesNeverReachACredsToken: a token with read_client_secret or
// manage_client_secrets could create a client secret of the credential and
// read its value. Config refuses them, so no role and no creds token can
// carry them, even where the credential is granted them (as for rotation);
// a config stored before the rule serves no token until they are removed.
func TestSecretScopesNeverReachACredsToken(t *testing.T) {
	for _, scope := range secretScopes {
		t.Run(scope, func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			requests := e.emu.Stats().TokenRequests
			resp, err := e.write("config", map[string]any{keyScopes: testScopes + "," + scope})
			e.mustFail(resp, err, scope, "remove it")
			if slices.Contains(e.stored().Scopes, scope) {
				t.Fatal("the refused scope was stored")
			}
			if e.emu.Stats().TokenRequests != requests {
				t.Error("the refused write minted a token")
			}

			e.changeStoredConfig(func(c *config) { c.Scopes = append(c.Scopes, scope) })
			e.b.invalidate(t.Context(), configStorageKey)
			resp, err = e.read("creds")
			e.mustFail(resp, err, scope, "write config scopes again")
			for _, tok := range e.emu.Tokens() {
				// Rotation's own management tokens carry the scope, but
				// never the config's firefly_api.
				if slices.Contains(tok.Scopes, scope) && slices.Contains(tok.Scopes, "firefly_api") {
					t.Errorf("a token with %s and the config's scopes was issued", scope)
				}
			}
		})
	}
}
