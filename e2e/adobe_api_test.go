package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// aaCurlRecipe is the curl recipe of docs/calling-adobe-apis.md, word for word.
const aaCurlRecipe = `ADOBE_ACCESS_TOKEN=$(vault read -field=access_token adobe/creds/firefly)
ADOBE_API_KEY=$(vault read -field=client_id adobe/creds/firefly)
curl -sS --fail-with-body -X POST "$FIREFLY_API/v3/images/generate" \
  -H "Authorization: Bearer $ADOBE_ACCESS_TOKEN" \
  -H "x-api-key: $ADOBE_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"prompt":"a lighthouse at dusk"}'
`

// aaJSONRecipe is the one-read recipe of docs/calling-adobe-apis.md, word for word.
const aaJSONRecipe = `CREDS=$(vault read -format=json adobe/creds/firefly-dedicated)
curl -sS --fail-with-body -X POST "$FIREFLY_API/v3/images/generate" \
  -H "Authorization: Bearer $(printf '%s' "$CREDS" | jq -r .data.access_token)" \
  -H "x-api-key: $(printf '%s' "$CREDS" | jq -r .data.client_id)" \
  -H "x-gw-ims-org-id: $(printf '%s' "$CREDS" | jq -r .data.org_id)" \
  -H "Content-Type: application/json" \
  -d '{"prompt":"a lighthouse at dusk"}'
`

// TestAdobeAPICallFromCreds: one read of adobe/creds/<role>, by the vault CLI
// or the HTTP API, gives an application both headers an Adobe API call needs,
// and the API stand-in accepts the call; the token of a revoked dedicated
// lease is refused with the gateway's 401013.
func TestAdobeAPICallFromCreds(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu, "org_id="+imsemu.DefaultOrgID)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")
	v.mustCLI("write", "adobe/roles/firefly-dedicated", "scopes=openid,AdobeID,firefly_api,ff_apis", "mode=dedicated")
	app := v.appToken("firefly")

	// readCLI is `vault read -format=json <path>` with the application's token.
	readCLI := func(token, path string) (leaseID, accessToken, clientID, orgID string) {
		t.Helper()
		out, err := v.cliAs(token, "", "read", "-format=json", path)
		if err != nil {
			t.Fatalf("vault read %s: %v\n%s", path, err, out)
		}
		var s struct {
			LeaseID string `json:"lease_id"`
			Data    struct {
				AccessToken string `json:"access_token"`
				ClientID    string `json:"client_id"`
				OrgID       string `json:"org_id"`
			} `json:"data"`
		}
		i := strings.Index(out, "{")
		if i < 0 {
			t.Fatalf("vault read -format=json %s printed no JSON:\n%s", path, out)
		}
		if err := json.Unmarshal([]byte(out[i:]), &s); err != nil {
			t.Fatalf("vault read -format=json %s: %v\n%s", path, err, out)
		}
		return s.LeaseID, s.Data.AccessToken, s.Data.ClientID, s.Data.OrgID
	}

	t.Run("cli", func(t *testing.T) {
		_, tok, clientID, orgID := readCLI(app, "adobe/creds/firefly")
		if clientID != testClientID || orgID != imsemu.DefaultOrgID {
			t.Fatalf("creds gave client_id %q and org_id %q; want %q and %q", clientID, orgID, testClientID, imsemu.DefaultOrgID)
		}
		got := callAdobeAPI(t, emu, tok, clientID)
		t.Logf("API stand-in, headers from one `vault read -format=json`: %d", got.status)
		if got.status != 200 || !strings.Contains(got.body, `"outputs"`) {
			t.Fatalf("API call with the read's token and client_id: %d %s", got.status, got.body)
		}
		if n := aaAPICalls(t, emu, tok); n != 1 {
			t.Errorf("the stand-in counts %d accepted calls with the token read; want 1", n)
		}
		// Both headers matter: without the read's client_id the call fails.
		if got := callAdobeAPI(t, emu, tok, "another-client"); got.status != 403 || got.errorCode != imsemu.APIErrorAPIKeyInvalid {
			t.Errorf("API call with a foreign x-api-key: %d %s; want 403 %s", got.status, got.body, imsemu.APIErrorAPIKeyInvalid)
		}
	})

	t.Run("api", func(t *testing.T) {
		c, err := v.client.Clone()
		if err != nil {
			t.Fatal(err)
		}
		c.SetToken(app)
		s, err := c.Logical().Read("adobe/creds/firefly")
		if err != nil {
			t.Fatal(err)
		}
		tok, _ := s.Data["access_token"].(string)
		clientID, _ := s.Data["client_id"].(string)
		got := callAdobeAPI(t, emu, tok, clientID)
		t.Logf("API stand-in, headers from api.Logical().Read: %d", got.status)
		if got.status != 200 {
			t.Fatalf("API call with the token and client_id of api.Logical().Read: %d %s", got.status, got.body)
		}
	})

	t.Run("dedicated lease revoked", func(t *testing.T) {
		leaseID, tok, clientID, _ := readCLI(v.token, "adobe/creds/firefly-dedicated")
		if got := callAdobeAPI(t, emu, tok, clientID); got.status != 200 {
			t.Fatalf("API call with a live dedicated token: %d %s", got.status, got.body)
		}
		v.mustCLI("lease", "revoke", "-sync", leaseID)
		got := callAdobeAPI(t, emu, tok, clientID)
		t.Logf("API stand-in, token of a revoked dedicated lease: %d %s", got.status, strings.TrimSpace(got.body))
		if got.status != 401 || got.errorCode != imsemu.APIErrorTokenInvalid || !strings.Contains(got.body, "Oauth token is not valid") {
			t.Errorf("API call with the token of a revoked dedicated lease: %d %s; want 401 %s", got.status, got.body, imsemu.APIErrorTokenInvalid)
		}
	})

	// The docs' shell recipes, run as written, with curl (and jq) from the
	// machine and `vault` on PATH.
	t.Run("doc recipes", func(t *testing.T) {
		requireTools(t, "sh", "curl", "jq")
		bin := t.TempDir()
		if err := os.Symlink(suite.vaultBin, filepath.Join(bin, "vault")); err != nil {
			t.Fatal(err)
		}
		for _, rc := range []struct{ name, token, script string }{
			{"curl with vault read -field", app, aaCurlRecipe},
			{"curl with one vault read -format=json", v.token, aaJSONRecipe},
		} {
			before := emu.Stats().APIAccepted
			cmd := exec.Command("sh", "-ec", rc.script)
			cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
				"VAULT_ADDR=http://"+v.addr, "VAULT_TOKEN="+rc.token, "VAULT_FORMAT=", "FIREFLY_API="+emu.URL)
			out, err := cmd.CombinedOutput()
			accepted := emu.Stats().APIAccepted - before
			t.Logf("%s: exit %v, API stand-in accepted %d call(s)", rc.name, err, accepted)
			if err != nil || !strings.Contains(string(out), `"outputs"`) || accepted != 1 {
				t.Errorf("recipe %q: %v, %d call(s) accepted\n%s", rc.name, err, accepted, out)
			}
		}
	})
}

// aaAPICalls is how many calls the API stand-in accepted with token.
func aaAPICalls(t *testing.T, emu *emulator, token string) int {
	t.Helper()
	for _, it := range emu.Tokens() {
		if it.AccessToken == token {
			return it.APICalls
		}
	}
	t.Fatalf("the emulator never issued the token read")
	return 0
}
