package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Helpers of load_test.go start with "ld".

// ldCreds is what one creds read over the HTTP API returned.
type ldCreds struct {
	status  int
	leaseID string
	token   string
	scopes  []string
	took    time.Duration
	err     error
}

// ldRead reads path over Vault's HTTP API with a plain net/http client.
func ldRead(hc *http.Client, v *vaultServer, path string) ldCreds {
	start := time.Now()
	r := ldReadOnce(hc, v, path)
	r.took = time.Since(start)
	return r
}

func ldReadOnce(hc *http.Client, v *vaultServer, path string) (r ldCreds) {
	req, err := http.NewRequest(http.MethodGet, "http://"+v.addr+"/v1/"+path, nil)
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := hc.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r.status = resp.StatusCode
	if err != nil {
		r.err = err
		return r
	}
	if resp.StatusCode != http.StatusOK {
		r.err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, body)
		return r
	}
	var out struct {
		LeaseID string `json:"lease_id"`
		Data    struct {
			AccessToken string   `json:"access_token"`
			Scopes      []string `json:"scopes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		r.err = fmt.Errorf("decoding %s: %w", body, err)
		return r
	}
	r.leaseID, r.token, r.scopes = out.LeaseID, out.Data.AccessToken, out.Data.Scopes
	if r.token == "" || r.leaseID == "" {
		r.err = fmt.Errorf("no token or lease in %s", body)
	}
	return r
}

// ldSorted returns a sorted copy of a comma-separated scope list.
func ldSorted(scopes []string) []string {
	s := slices.Clone(scopes)
	sort.Strings(s)
	return s
}

// TestColdStartLoadMintsOncePerScopeSet sends 500 concurrent creds reads
// over the HTTP API, spread across 5 shared roles with 5 distinct scope sets,
// to a mount whose cache is empty while IMS answers slowly: IMS must see
// exactly one token request per scope set, every read must succeed, and all
// readers of a role must get the same token.
func TestColdStartLoadMintsOncePerScopeSet(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	// verify=false: the config write mints nothing, so the cache is empty.
	v.configure(emu, "verify=false")

	roles := map[string]string{
		"r1": "openid,AdobeID",
		"r2": "openid,AdobeID,firefly_api",
		"r3": "openid,AdobeID,firefly_api,ff_apis",
		"r4": "openid,AdobeID,session,additional_info",
		// All of the config's scopes, in another order than the config's.
		"r5": "ff_apis,firefly_api,read_organizations,additional_info,session,AdobeID,openid",
	}
	names := make([]string, 0, len(roles))
	for name, scopes := range roles {
		v.mustCLI("write", "adobe/roles/"+name, "scopes="+scopes)
		names = append(names, name)
	}
	sort.Strings(names)

	const latency = 200 * time.Millisecond
	emu.SetLatency(latency)
	emu.ResetStats()
	if s := emu.Stats(); s.TokenRequests != 0 || len(emu.Tokens()) != 0 {
		t.Fatalf("IMS was asked for a token before the load: %+v, %d tokens", s, len(emu.Tokens()))
	}

	const readers = 500
	tr := &http.Transport{
		MaxConnsPerHost:     readers + 10,
		MaxIdleConns:        readers + 10,
		MaxIdleConnsPerHost: readers + 10,
		IdleConnTimeout:     30 * time.Second,
	}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}

	results := make([]ldCreds, readers)
	var ready, done sync.WaitGroup
	start := make(chan struct{})
	for i := range readers {
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			ready.Done()
			<-start
			results[i] = ldRead(hc, v, "adobe/creds/"+names[i%len(names)])
		}()
	}
	ready.Wait()
	began := time.Now()
	close(start)
	done.Wait()
	wall := time.Since(began)

	stats := emu.Stats()
	var errs []string
	var slowest time.Duration
	tokenOf := map[string]string{} // role -> token
	roleOf := map[string]string{}  // token -> role
	leases := make(map[string]bool, readers)
	for i, r := range results {
		role := names[i%len(names)]
		slowest = max(slowest, r.took)
		if r.err != nil {
			errs = append(errs, fmt.Sprintf("reader %d (%s): %v", i, role, r.err))
			continue
		}
		if leases[r.leaseID] {
			t.Errorf("reader %d (%s) got lease %s that another reader got too", i, role, r.leaseID)
		}
		leases[r.leaseID] = true
		if !slices.Equal(ldSorted(r.scopes), ldSorted(strings.Split(roles[role], ","))) {
			t.Errorf("reader %d (%s) got scopes %v, want %s", i, role, r.scopes, roles[role])
		}
		switch prev, ok := tokenOf[role]; {
		case !ok:
			tokenOf[role] = r.token
		case prev != r.token:
			t.Errorf("readers of role %s got different tokens", role)
		}
		if other, ok := roleOf[r.token]; ok && other != role {
			t.Errorf("roles %s and %s, with different scopes, got the same token", other, role)
		}
		roleOf[r.token] = role
	}
	if len(errs) > 0 {
		t.Errorf("%d of %d reads failed; first ones:\n%s", len(errs), readers, strings.Join(errs[:min(len(errs), 5)], "\n"))
	}
	t.Logf("load: %d reads over %d roles in %s (slowest %s), IMS latency %s: %d token requests, %d tokens issued, %d errors",
		readers, len(names), wall.Round(time.Millisecond), slowest.Round(time.Millisecond), latency, stats.TokenRequests, stats.TokensIssued, len(errs))

	if stats.TokenRequests != len(roles) || stats.TokensIssued != len(roles) {
		t.Errorf("IMS saw %d token requests and issued %d tokens for %d cold scope sets, want exactly %d",
			stats.TokenRequests, stats.TokensIssued, len(roles), len(roles))
	}
	issued := emu.Tokens()
	for role, tok := range tokenOf {
		found := false
		for _, it := range issued {
			if it.AccessToken != tok {
				continue
			}
			found = true
			if !slices.Equal(ldSorted(it.Scopes), ldSorted(strings.Split(roles[role], ","))) {
				t.Errorf("role %s's token was issued with scopes %v, want %s", role, it.Scopes, roles[role])
			}
		}
		if !found || !emu.TokenValid(tok) {
			t.Errorf("role %s's token is not a valid token issued by the emulator", role)
		}
	}
	if len(tokenOf) != len(roles) {
		t.Errorf("got tokens for %d roles, want %d", len(tokenOf), len(roles))
	}
	// The plugin's own counters: every read was a shared read, and more
	// readers waited on IMS than IMS got requests, so concurrent readers of
	// a cold scope set really did share one request.
	info, err := v.client.Logical().Read("adobe/info")
	if err != nil || info == nil {
		t.Fatalf("read adobe/info: %v", err)
	}
	counters, _ := info.Data["counters"].(map[string]any)
	num := func(key string) int64 {
		n, err := counters[key].(json.Number).Int64()
		if err != nil {
			t.Fatalf("adobe/info counters %s: %v (%v)", key, err, counters)
		}
		return n
	}
	sharedReads, hits, pluginRequests := num("shared_reads"), num("cache_hits"), num("ims_token_requests")
	waited := sharedReads - hits
	t.Logf("load: plugin counters: %d shared reads, %d cache hits, %d readers waited on IMS, %d IMS token requests", sharedReads, hits, waited, pluginRequests)
	if sharedReads != readers || pluginRequests != int64(len(roles)) {
		t.Errorf("plugin counted %d shared reads and %d IMS token requests, want %d and %d", sharedReads, pluginRequests, readers, len(roles))
	}
	if waited <= int64(len(roles)) {
		t.Errorf("only %d readers waited on IMS: the reads did not overlap the cold mints, so coalescing was not exercised", waited)
	}
	// Every read started with an empty cache, so the load cannot end before
	// IMS answered once.
	if wall < latency {
		t.Errorf("the load took %s, less than one IMS answer (%s): the reads did not reach IMS", wall, latency)
	}
}
