package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// pxRecipe is the application half of the proxy recipe of
// docs/calling-adobe-apis.md, word for word: no Vault token, one read.
const pxRecipe = `CREDS=$(curl -sS --fail-with-body "$VAULT_PROXY/v1/adobe/creds/firefly")
curl -sS --fail-with-body -X POST "$FIREFLY_API/v3/images/generate" \
  -H "Authorization: Bearer $(printf '%s' "$CREDS" | jq -r .data.access_token)" \
  -H "x-api-key: $(printf '%s' "$CREDS" | jq -r .data.client_id)" \
  -H "Content-Type: application/json" \
  -d '{"prompt":"a lighthouse at dusk"}'
`

// TestProxyCachesCredsLease: applications that read adobe/creds/<role>
// through Vault Proxy (cache {} and api_proxy { use_auto_auth_token = true })
// with no Vault token of their own share one lease: 200 concurrent reads make
// one lease in Vault and one IMS token request, all carry the same token, and
// that token works at the API stand-in. The proxy caches per request, headers
// included: another client (curl) gets one lease of its own, and the same
// shared token.
func TestProxyCachesCredsLease(t *testing.T) {
	const reads, workers = 200, 20
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")

	dir := t.TempDir()
	addr := pxFreeAddr(t)
	// The proxy recipe of docs/calling-adobe-apis.md, with this test's addresses.
	hcl := v.agentConfig(t, dir, v.appToken("firefly"), fmt.Sprintf(`cache {}
api_proxy {
  use_auto_auth_token = true
}
listener "tcp" {
  address     = %q
  tls_disable = true
}
`, addr))
	proxyDone := startVaultProcess(t, dir, "proxy", hcl)
	hc := &http.Client{Timeout: 30 * time.Second}
	eventually(t, 30*time.Second, "vault proxy to answer on "+addr, func() error {
		select {
		case err := <-proxyDone:
			t.Fatalf("vault proxy exited: %v", err)
		default:
		}
		resp, err := hc.Get("http://" + addr + "/v1/sys/health")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("sys/health through the proxy: %d", resp.StatusCode)
		}
		return nil
	})

	beforeReads := emu.Stats().TokenRequests
	type answer struct {
		status                         int
		cache                          string // X-Cache: HIT or MISS
		leaseID, accessToken, clientID string
		err                            error
	}
	answers := make([]answer, reads)
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				a := &answers[i]
				// No X-Vault-Token: the proxy adds its auto-auth token.
				resp, err := hc.Get("http://" + addr + "/v1/adobe/creds/firefly")
				if err != nil {
					a.err = err
					continue
				}
				body, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				a.status, a.cache = resp.StatusCode, resp.Header.Get("X-Cache")
				var s struct {
					LeaseID string `json:"lease_id"`
					Data    struct {
						AccessToken string `json:"access_token"`
						ClientID    string `json:"client_id"`
					} `json:"data"`
				}
				if err == nil {
					err = json.Unmarshal(body, &s)
				}
				a.err, a.leaseID, a.accessToken, a.clientID = err, s.LeaseID, s.Data.AccessToken, s.Data.ClientID
			}
		})
	}
	for i := range reads {
		next <- i
	}
	close(next)
	wg.Wait()
	imsRequests := emu.Stats().TokenRequests - beforeReads

	statuses, caches := map[int]int{}, map[string]int{}
	leaseIDs, tokens := map[string]bool{}, map[string]bool{}
	for i, a := range answers {
		if a.err != nil {
			t.Fatalf("read %d through the proxy: %v", i, a.err)
		}
		statuses[a.status]++
		caches[a.cache]++
		leaseIDs[a.leaseID] = true
		tokens[a.accessToken] = true
	}
	leases := pxLeases(t, v)
	t.Logf("Proxy: %d reads answered %v, X-Cache %v; %d distinct lease id(s), %d distinct token(s); leases in Vault %d; IMS token requests %d",
		reads, statuses, caches, len(leaseIDs), len(tokens), len(leases), imsRequests)
	if statuses[http.StatusOK] != reads {
		t.Errorf("reads through the proxy answered %v; want %d x 200", statuses, reads)
	}
	if len(tokens) != 1 || len(leaseIDs) != 1 {
		t.Errorf("the reads carried %d distinct tokens and %d distinct lease ids; want 1 and 1", len(tokens), len(leaseIDs))
	}
	if caches["MISS"] != 1 || caches["HIT"] != reads-1 {
		t.Errorf("X-Cache headers %v; want 1 MISS and %d HIT", caches, reads-1)
	}
	if len(leases) != 1 || "adobe/creds/firefly/"+leases[0] != answers[0].leaseID {
		t.Errorf("%d leases under adobe/creds/firefly/ in Vault (first %v); want exactly the proxy's %s",
			len(leases), leases[:min(len(leases), 3)], answers[0].leaseID)
	}
	if imsRequests != 1 {
		t.Errorf("%d IMS token requests for %d reads through the proxy; want 1", imsRequests, reads)
	}

	got := callAdobeAPI(t, emu, answers[0].accessToken, answers[0].clientID)
	t.Logf("Proxy: API stand-in with the proxied token and client_id: %d", got.status)
	if got.status != http.StatusOK {
		t.Errorf("API call with the token read through the proxy: %d %s", got.status, got.body)
	}

	// The docs' application recipe, run as written, twice. The proxy's cache
	// key is the whole request, headers included, so curl (another
	// User-Agent) gets a lease of its own on its first read, and the cached
	// one on its second; the IMS token stays the one shared token.
	requireTools(t, "sh", "curl", "jq")
	before := emu.Stats().APIAccepted
	for range 2 {
		sh := exec.Command("sh", "-ec", pxRecipe)
		sh.Env = append(os.Environ(), "VAULT_PROXY=http://"+addr, "FIREFLY_API="+emu.URL)
		if out, err := sh.CombinedOutput(); err != nil || !strings.Contains(string(out), `"outputs"`) {
			t.Errorf("the proxy recipe: %v\n%s", err, out)
		}
	}
	accepted := emu.Stats().APIAccepted - before
	leasesSoFar := len(pxLeases(t, v))
	t.Logf("Proxy recipe (curl + jq) run twice: API stand-in accepted %d call(s); leases in Vault now %d; IMS token requests %d",
		accepted, leasesSoFar, emu.Stats().TokenRequests-beforeReads)
	if accepted != 2 {
		t.Errorf("the API stand-in accepted %d of the recipe's 2 calls", accepted)
	}
	if leasesSoFar != 2 {
		t.Errorf("after the recipe's two reads through the proxy, %d leases; want 2 (one for curl's requests)", leasesSoFar)
	}
	if n := emu.Stats().TokenRequests - beforeReads; n != 1 {
		t.Errorf("%d IMS token requests in all; want still 1", n)
	}

	// Control: a read straight from Vault, past the proxy, is a lease of its own,
	// so the count above is the proxy's doing.
	if _, err := v.client.Logical().Read("adobe/creds/firefly"); err != nil {
		t.Fatal(err)
	}
	if n := len(pxLeases(t, v)); n != leasesSoFar+1 {
		t.Errorf("after one direct read, %d leases; want %d", n, leasesSoFar+1)
	}
}

// pxLeases lists the lease ids under adobe/creds/firefly/ (sys/leases/lookup, root token).
func pxLeases(t *testing.T, v *vaultServer) []string {
	t.Helper()
	s, err := v.client.Logical().List("sys/leases/lookup/adobe/creds/firefly/")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	if s != nil {
		keys, _ := s.Data["keys"].([]any)
		for _, k := range keys {
			ids = append(ids, fmt.Sprint(k))
		}
	}
	sort.Strings(ids)
	return ids
}

// pxFreeAddr is a free loopback address for the proxy's listener.
func pxFreeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
