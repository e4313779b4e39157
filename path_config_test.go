package adobeims

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

func TestConfigCreateReadNeverReturnsSecret(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"org_id": "ABC123@AdobeOrg", "credential_id": "cred-1"})

	resp := e.mustOK(e.read("config"))
	want := map[string]any{
		"client_id": testClientID, "scopes": strings.Split(testScopes, ","), "ims_url": e.srv.URL,
		"org_id": "ABC123@AdobeOrg", "credential_id": "cred-1", "io_management_url": "https://api.adobe.io",
		// Automated rotation, off: the SDK's standard fields, as its helpers show them.
		"rotation_driver": "none", "disable_automated_rotation": false, "rotation_policy": "",
		"persist_tokens":              true,
		"max_concurrent_ims_requests": 4,
		"last_vault_rotation":         nil, "next_vault_rotation": nil,
	}
	if !reflect.DeepEqual(resp.Data, want) {
		t.Fatalf("config read = %#v\nwant %#v", resp.Data, want)
	}
	if got := e.emu.Stats().TokenRequests; got != 1 {
		t.Fatalf("verify made %d IMS token requests, want 1", got)
	}
}

// TestSecretsAreStoredSealWrapped: every storage entry that holds the client
// secret or a token is one Vault seal-wraps (SealWrapStorage: an exact key,
// or a prefix ending in "/").
func TestSecretsAreStoredSealWrapped(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/s", map[string]any{"scopes": "openid"}))
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	e.creds("creds")
	e.creds("creds/s")
	e.creds("creds/d")

	sealWrapped := func(key string) bool {
		for _, p := range e.b.PathsSpecial.SealWrapStorage {
			if key == p || (strings.HasSuffix(p, "/") && strings.HasPrefix(key, p)) {
				return true
			}
		}
		return false
	}
	keys, err := logical.CollectKeys(t.Context(), e.storage.(*logical.InmemStorage))
	if err != nil {
		t.Fatal(err)
	}
	holding := 0
	for _, key := range keys {
		entry, err := e.storage.Get(t.Context(), key)
		if err != nil || entry == nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		var what []string
		if strings.Contains(string(entry.Value), testClientSecret) {
			what = append(what, "the client secret")
		}
		for _, tok := range e.emu.Tokens() {
			if strings.Contains(string(entry.Value), tok.AccessToken) {
				what = append(what, "an access token")
				break
			}
		}
		if len(what) == 0 {
			continue
		}
		holding++
		if !sealWrapped(key) {
			t.Errorf("storage entry %q holds %s but is not seal-wrapped (SealWrapStorage %v)", key, strings.Join(what, " and "), e.b.PathsSpecial.SealWrapStorage)
		}
	}
	if holding == 0 {
		t.Fatalf("no storage entry among %v holds the client secret: the check above saw nothing", keys)
	}
}

func TestConfigPartialUpdateKeepsOtherFields(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("config", map[string]any{"scopes": "openid,AdobeID"}))

	resp := e.mustOK(e.read("config"))
	if got := resp.Data["scopes"]; !reflect.DeepEqual(got, []string{"openid", "AdobeID"}) {
		t.Fatalf("scopes = %v", got)
	}
	if resp.Data["client_id"] != testClientID || resp.Data["ims_url"] != e.srv.URL {
		t.Fatalf("other fields changed: %#v", resp.Data)
	}
	// The stored secret still works: a token can be minted without giving it again.
	e.creds("creds")
}

func TestConfigVerifyRefusalSavesNothing(t *testing.T) {
	cases := []struct {
		name string
		data map[string]any
		want []string
	}{
		{"wrong secret", map[string]any{"client_secret": "wrong-secret"}, []string{"invalid_client", "x-debug-id", "nothing was saved"}},
		{"unknown client", map[string]any{"client_id": "other-client", "client_secret": "wrong-secret"}, []string{"invalid_client"}},
		{"scope not granted", map[string]any{"scopes": "openid,not_granted"}, []string{"invalid_scope"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			data := map[string]any{"client_id": testClientID, "client_secret": testClientSecret, "scopes": testScopes, "ims_url": e.srv.URL}
			for k, v := range tc.data {
				data[k] = v
			}
			resp, err := e.write("config", data)
			if err != nil || resp == nil || !resp.IsError() {
				t.Fatalf("want a 400 error response, got %#v, %v", resp, err)
			}
			e.mustFail(resp, err, tc.want...)
			if got := e.mustOK(e.read("config")); got != nil {
				t.Fatalf("a refused config was stored: %#v", got.Data)
			}
		})
	}
}

func TestConfigVerifyFalseMakesNoIMSRequest(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false, "client_secret": "not-checked"})
	if got := e.emu.Stats().TokenRequests; got != 0 {
		t.Fatalf("verify=false made %d IMS requests", got)
	}
	if e.mustOK(e.read("config")) == nil {
		t.Fatal("config not stored")
	}
}

// TestConfigVerifyIMSDownIs502: when IMS answers 503 or cannot be reached at
// all, verifying a config write fails as a bad gateway (502), not as an
// internal error of Vault's (500), and nothing is saved.
func TestConfigVerifyIMSDownIs502(t *testing.T) {
	for _, tc := range []struct {
		name string
		down func(e *testEnv) (imsURL string)
		want string
	}{
		{"IMS answers 503", func(e *testEnv) string {
			e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 503})
			return e.srv.URL
		}, "503"},
		{"IMS unreachable", func(*testEnv) string {
			gone := httptest.NewServer(http.NotFoundHandler())
			gone.Close() // its address now refuses connections
			return gone.URL
		}, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			imsURL := tc.down(e)
			resp, err := e.write("config", map[string]any{"client_id": testClientID, "client_secret": testClientSecret, "scopes": testScopes, "ims_url": imsURL})
			e.mustFail(resp, err, tc.want, "verifying", "nothing was saved")
			var coded logical.HTTPCodedError
			if !errors.As(err, &coded) || coded.Code() != http.StatusBadGateway {
				t.Fatalf("verifying while IMS is down: got resp %#v, err %v (%T); want an error coded 502", resp, err, err)
			}
			if got := e.mustOK(e.read("config")); got != nil {
				t.Fatalf("a config that could not be verified was stored: %#v", got.Data)
			}
		})
	}
}

func TestConfigBadInputChangesNothing(t *testing.T) {
	cases := []struct {
		name string
		data map[string]any
		want string
	}{
		{"empty client_id", map[string]any{"client_id": ""}, "client_id is empty"},
		{"client_id with space", map[string]any{"client_id": "abc def", "client_secret": "x"}, "characters an Adobe identifier cannot have"},
		{"oversized client_id", map[string]any{"client_id": strings.Repeat("a", 300), "client_secret": "x"}, "at most 255"},
		{"client_id change without secret", map[string]any{"client_id": "other"}, "give client_secret in the same write"},
		{"secret with newline", map[string]any{"client_secret": "abc\n"}, "whitespace"},
		{"empty secret", map[string]any{"client_secret": ""}, "client_secret is empty"},
		{"space-separated scopes", map[string]any{"scopes": "openid AdobeID"}, "separated by commas"},
		{"empty scope item", map[string]any{"scopes": "openid,,AdobeID"}, "item 2 is empty"},
		{"duplicate scope", map[string]any{"scopes": "openid,openid"}, "twice"},
		{"empty scopes", map[string]any{"scopes": ""}, "scopes is empty"},
		{"http to remote host", map[string]any{"ims_url": "http://ims.example.com"}, "loopback"},
		{"url with user info", map[string]any{"ims_url": "https://user:pw@ims.example.com"}, "ims_url"},
		{"url with query", map[string]any{"ims_url": "https://ims.example.com/?a=b"}, "ims_url"},
		{"url with fragment", map[string]any{"ims_url": "https://ims.example.com/#x"}, "ims_url"},
		{"bad io url", map[string]any{"io_management_url": "ftp://api.adobe.io"}, "io_management_url"},
		{"bad org id", map[string]any{"org_id": "a b"}, "org_id"},
		{"unknown field", map[string]any{"scope": "openid"}, "unknown field(s) scope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(nil)
			before := e.mustOK(e.read("config")).Data
			requests := e.emu.Stats().TokenRequests

			resp, err := e.write("config", tc.data)
			if err != nil {
				t.Fatalf("want a 400 error response, got error %v", err)
			}
			e.mustFail(resp, err, tc.want)
			if after := e.mustOK(e.read("config")).Data; !reflect.DeepEqual(before, after) {
				t.Fatalf("config changed:\nbefore %#v\nafter  %#v", before, after)
			}
			if e.emu.Stats().TokenRequests != requests {
				t.Fatal("bad input reached IMS")
			}
			e.creds("creds") // the stored secret is untouched
		})
	}
}

func TestConfigCreateRequiresFields(t *testing.T) {
	e := newTestEnv(t)
	resp, err := e.write("config", map[string]any{"client_id": testClientID})
	e.mustFail(resp, err, "client_secret", "scopes")
}

func TestConfigScopeChangeMustKeepRolesValid(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/ff", map[string]any{"scopes": "firefly_api"}))
	resp, err := e.write("config", map[string]any{"scopes": "openid,AdobeID"})
	e.mustFail(resp, err, "ff (needs firefly_api)")
	if got := e.mustOK(e.read("config")).Data["scopes"]; !reflect.DeepEqual(got, strings.Split(testScopes, ",")) {
		t.Fatalf("scopes changed to %v", got)
	}
}

func TestConfigDeleteDropsTokens(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.creds("creds")
	e.mustOK(e.request("delete", "config", nil))
	if got := e.mustOK(e.read("config")); got != nil {
		t.Fatalf("config still there: %#v", got)
	}
	resp, err := e.read("creds")
	e.mustFail(resp, err, "not configured")
	if len(e.b.cache.States()) != 0 {
		t.Fatal("cached tokens survived the config delete")
	}
}

// TestConfigChangeKeepsOrDropsTokensAlikeOnEveryNode: the node that writes
// the config and a node that learns of it through Invalidate keep or drop
// cached tokens alike. A change that keeps the client, scopes and IMS URL
// keeps them, as tokens minted with an earlier secret stay valid at IMS.
func TestConfigChangeKeepsOrDropsTokensAlikeOnEveryNode(t *testing.T) {
	cases := []struct {
		name   string
		write  map[string]any
		edit   func(c *config)
		keeps  bool
		scopes int
	}{
		{
			name:  "secret only",
			write: map[string]any{"client_secret": "another-secret-of-the-same-client", "verify": false},
			edit:  func(c *config) { c.ClientSecret = "another-secret-of-the-same-client" },
			keeps: true,
		},
		{
			name:  "rotation settings only",
			write: map[string]any{"org_id": "ORG@AdobeOrg", "credential_id": "cred1", "verify": false},
			edit:  func(c *config) { c.OrgID, c.CredentialID = "ORG@AdobeOrg", "cred1" },
			keeps: true,
		},
		{
			name:  "scopes",
			write: map[string]any{"scopes": "openid,AdobeID", "verify": false},
			edit:  func(c *config) { c.Scopes = []string{"openid", "AdobeID"} },
		},
		{
			name:  "ims_url",
			write: map[string]any{"ims_url": "http://localhost:1", "client_secret": testClientSecret, "verify": false},
			edit:  func(c *config) { c.IMSURL = "http://localhost:1" },
		},
		{
			// Another credential, with the same scopes: the same cache key.
			name:  "client_id and secret",
			write: map[string]any{"client_id": "another-client", "client_secret": "another-client-secret", "verify": false},
			edit:  func(c *config) { c.ClientID, c.ClientSecret = "another-client", "another-client-secret" },
		},
	}
	for _, tc := range cases {
		for _, where := range []string{"this node", "another node"} {
			t.Run(tc.name+"/"+where, func(t *testing.T) {
				e := newTestEnv(t)
				e.configure(nil)
				e.creds("creds")
				if where == "this node" {
					e.mustOK(e.write("config", tc.write))
				} else {
					e.changeStoredConfig(tc.edit)
					e.b.invalidate(t.Context(), configStorageKey)
				}
				if kept := len(e.b.cache.States()) == 1; kept != tc.keeps {
					t.Fatalf("cached token kept=%v, want %v", kept, tc.keeps)
				}
				e.b.mu.RLock()
				conn := e.b.conn
				e.b.mu.RUnlock()
				if stored, _ := getConfig(t.Context(), e.storage); conn == nil || conn.config.ClientSecret != stored.ClientSecret || conn.config.IMSURL != stored.IMSURL {
					t.Fatal("the node does not mint with the stored config")
				}
			})
		}
	}
}

func TestInvalidateConfigDropsTokens(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	first := e.creds("creds").Data["access_token"]
	// Another node changed the scopes.
	scopes := []string{"openid", "AdobeID"}
	e.changeStoredConfig(func(c *config) { c.Scopes = scopes })
	e.b.invalidate(t.Context(), "config")
	resp := e.creds("creds")
	if resp.Data["access_token"] == first {
		t.Fatal("Invalidate(config) kept the old token")
	}
	if !reflect.DeepEqual(resp.Data["scopes"], scopes) {
		t.Fatalf("scopes after the change elsewhere: %v", resp.Data["scopes"])
	}
}

func TestInvalidateAfterRotationElsewhereKeepsTokens(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	first := e.creds("creds").Data["access_token"]

	// Another node stored a new secret for the same credential.
	e.changeStoredConfig(func(c *config) { c.ClientSecret = "rotated-elsewhere" })
	e.b.invalidate(t.Context(), "config")
	if got := e.creds("creds").Data["access_token"]; got != first {
		t.Fatal("a secret-only change dropped a token that is still valid at IMS")
	}
	e.b.mu.RLock()
	secret := e.b.conn.config.ClientSecret
	e.b.mu.RUnlock()
	if secret != "rotated-elsewhere" {
		t.Fatal("the node kept minting with the old secret")
	}
}

// TestInvalidateAfterClientChangeElsewhereServesNoOldToken: another node
// moved the config to another credential with the same scopes, so the
// cache key stays the same. This node must not serve the old client's
// token: the next read mints with the new client (which this IMS does not
// know, so it fails) and returns that client's id.
func TestInvalidateAfterClientChangeElsewhereServesNoOldToken(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.creds("creds")

	e.changeStoredConfig(func(c *config) { c.ClientID, c.ClientSecret = "another-client", "Qv7-Wm2-Np8-Kd4" })
	e.b.invalidate(t.Context(), configStorageKey)
	resp, err := e.read("creds")
	if err == nil && resp != nil && !resp.IsError() {
		t.Fatalf("after another node moved the config to another client, a read returned a token for client_id %v: want a new mint with the new client", resp.Data[keyClientID])
	}
	e.mustFail(resp, err, "invalid_client")
}
