package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// Helpers of outage_test.go start with "ot".

// otIMSCallBound is the plugin's documented bound on one IMS call, retries
// included (imsCallBound in backend.go, "30 seconds" in the README).
const otIMSCallBound = 30 * time.Second

// otAttempts finds the number of HTTP attempts in an IMS error.
var otAttempts = regexp.MustCompile(`\(after (\d+) attempts\)`)

// otEmulator is the IMS emulator on a fixed loopback address that a test can
// take fully down (connections refused) and bring back on the same address,
// with the same state (issued tokens, secrets, counters).
type otEmulator struct {
	*imsemu.Emulator
	URL  string
	addr string
	t    *testing.T

	mu  sync.Mutex
	srv *httptest.Server
}

func otStartEmulator(t *testing.T, expiresIn time.Duration) *otEmulator {
	t.Helper()
	emu := newEmulator(expiresIn)
	srv := httptest.NewServer(emu)
	e := &otEmulator{Emulator: emu, URL: srv.URL, addr: srv.Listener.Addr().String(), t: t, srv: srv}
	t.Cleanup(e.down)
	return e
}

// harness returns the emulator in the harness's type, for vaultServer.configure.
func (e *otEmulator) harness() *emulator { return &emulator{Emulator: e.Emulator, URL: e.URL} }

// down closes the server and every connection to it: from now on a
// connection to its address is refused.
func (e *otEmulator) down() {
	e.mu.Lock()
	srv := e.srv
	e.srv = nil
	e.mu.Unlock()
	if srv != nil {
		srv.CloseClientConnections()
		srv.Close()
	}
}

// up serves the same emulator again on the same address.
func (e *otEmulator) up() {
	e.t.Helper()
	var l net.Listener
	eventually(e.t, 10*time.Second, "listening again on "+e.addr, func() error {
		var err error
		l, err = net.Listen("tcp", e.addr)
		return err
	})
	srv := httptest.NewUnstartedServer(e.Emulator)
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	e.mu.Lock()
	e.srv = srv
	e.mu.Unlock()
}

// otDial reports how a TCP connection to addr fares.
func otDial(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err == nil {
		c.Close()
	}
	return err
}

// otClient is an API client that does not retry, so that every failure and
// every duration measured is the one of a single request to Vault.
func otClient(t *testing.T, v *vaultServer) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = "http://" + v.addr
	cfg.MaxRetries = 0
	cfg.Timeout = 2 * time.Minute
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c.SetToken(v.token)
	return c
}

// otToken returns the access_token of a creds response, or an error saying
// why it is not a lease holding a token the emulator considers valid.
func otToken(s *api.Secret, emu *imsemu.Emulator) (string, error) {
	if s == nil || s.Data == nil {
		return "", errors.New("empty response")
	}
	tok, _ := s.Data["access_token"].(string)
	switch {
	case tok == "":
		return "", fmt.Errorf("no access_token in %v", s.Data)
	case !emu.TokenValid(tok):
		return "", errors.New("access_token is not valid at the emulator")
	case s.LeaseID == "" || s.LeaseDuration <= 0:
		return "", fmt.Errorf("not a lease: lease_id %q, lease_duration %d", s.LeaseID, s.LeaseDuration)
	}
	return tok, nil
}

// TestOutageThroughVault takes the IMS emulator fully down (its address
// refuses connections) under a real Vault: shared reads keep being served
// the cached token, dedicated reads fail fast with a clear error, a dedicated
// lease cannot be revoked until IMS is back, and everything works again once
// IMS returns on the same address.
func TestOutageThroughVault(t *testing.T) {
	ims := otStartEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(ims.harness())
	const sharedScopes, dedicatedScopes = "openid,AdobeID,firefly_api,ff_apis", "openid,AdobeID,firefly_api"
	v.mustCLI("write", "adobe/roles/shared", "scopes="+sharedScopes, "mode=shared")
	v.mustCLI("write", "adobe/roles/dedicated", "scopes="+dedicatedScopes, "mode=dedicated")
	c := otClient(t, v)

	read := func(path string) (string, *api.Secret, error) {
		s, err := c.Logical().Read(path)
		if err != nil {
			return "", nil, err
		}
		tok, err := otToken(s, ims.Emulator)
		return tok, s, err
	}

	// Warm: the shared scope set has a token, and a dedicated lease exists.
	shared, _, err := read("adobe/creds/shared")
	if err != nil {
		t.Fatalf("warm read of adobe/creds/shared: %v", err)
	}
	configTok, _, err := read("adobe/creds")
	if err != nil {
		t.Fatalf("warm read of adobe/creds: %v", err)
	}
	oldDedicated, oldLease, err := read("adobe/creds/dedicated")
	if err != nil {
		t.Fatalf("read of adobe/creds/dedicated before the outage: %v", err)
	}
	before := ims.Stats()

	// Fully down: the address refuses connections.
	ims.down()
	if err := otDial(ims.addr); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("the emulator is down but a connection to %s gives %v, not connection refused", ims.addr, err)
	}
	outageStart := time.Now()

	// Shared reads: all served the cached token, without waiting on IMS.
	const readers = 20
	type result struct {
		path, tok string
		took      time.Duration
		err       error
	}
	results := make([]result, readers)
	var wg sync.WaitGroup
	for i := range readers {
		path := "adobe/creds/shared"
		if i%4 == 3 {
			path = "adobe/creds"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			tok, _, err := read(path)
			results[i] = result{path: path, tok: tok, took: time.Since(start), err: err}
		}()
	}
	wg.Wait()
	var maxShared time.Duration
	for i, r := range results {
		want := shared
		if r.path == "adobe/creds" {
			want = configTok
		}
		switch {
		case r.err != nil:
			t.Errorf("shared read %d (%s) during the outage failed: %v", i, r.path, r.err)
		case r.tok != want:
			t.Errorf("shared read %d (%s) during the outage got another token than the cached one", i, r.path)
		}
		maxShared = max(maxShared, r.took)
	}
	// A read that waited on IMS would take at least one retry round (over a second).
	if maxShared > 5*time.Second {
		t.Errorf("shared reads during the outage took up to %s: they should not wait on IMS while a valid token is cached", maxShared)
	}
	t.Logf("outage: %d shared reads served the cached tokens, slowest %s", readers, maxShared.Round(time.Millisecond))

	// Dedicated reads: fail with a clear error, well inside the bound.
	var durations []string
	for i := range 3 {
		start := time.Now()
		s, err := c.Logical().Read("adobe/creds/dedicated")
		took := time.Since(start)
		durations = append(durations, took.Round(time.Millisecond).String())
		if err == nil {
			t.Fatalf("dedicated read %d during the outage succeeded: %v", i, s)
		}
		msg := err.Error()
		var re *api.ResponseError
		if !errors.As(err, &re) || re.StatusCode != http.StatusBadGateway {
			t.Errorf("dedicated read %d during the outage: want HTTP 502 from Vault, got %v", i, err)
		}
		for _, want := range []string{"Adobe IMS", "connection refused", "could not be reached", "ims_url"} {
			if !strings.Contains(msg, want) {
				t.Errorf("dedicated read %d during the outage: error lacks %q: %s", i, want, msg)
			}
		}
		if m := otAttempts.FindStringSubmatch(msg); m == nil || m[1] == "1" {
			t.Errorf("dedicated read %d during the outage: the error does not show that connection refused was retried: %s", i, msg)
		}
		if strings.Contains(msg, testClientSecret) {
			t.Errorf("dedicated read %d during the outage: the error holds the client secret", i)
		}
		if took >= otIMSCallBound {
			t.Errorf("dedicated read %d during the outage took %s, not within the plugin's %s bound", i, took, otIMSCallBound)
		}
		if i == 0 {
			t.Logf("outage: dedicated read error: %s", msg)
		}
	}
	t.Logf("outage: dedicated reads failed after %s (bound %s)", strings.Join(durations, ", "), otIMSCallBound)

	// Revoking a dedicated lease needs IMS: it fails, and the lease stays.
	start := time.Now()
	err = c.Sys().Revoke(oldLease.LeaseID)
	revokeTook := time.Since(start)
	if err == nil {
		t.Errorf("revoking a dedicated lease while IMS is down succeeded, though its token could not be invalidated")
	} else if !strings.Contains(err.Error(), "Adobe IMS") {
		t.Errorf("revoking a dedicated lease while IMS is down: error does not name Adobe IMS: %v", err)
	}
	if revokeTook >= otIMSCallBound {
		t.Errorf("revoking a dedicated lease while IMS is down took %s, not within %s", revokeTook, otIMSCallBound)
	}
	if _, err := c.Sys().Lookup(oldLease.LeaseID); err != nil {
		t.Errorf("the dedicated lease whose revocation failed is gone: %v", err)
	}
	t.Logf("outage: revoking a dedicated lease failed after %s", revokeTook.Round(time.Millisecond))

	// The shared token is still served after all those failures.
	if tok, _, err := read("adobe/creds/shared"); err != nil || tok != shared {
		t.Errorf("shared read at the end of the outage: token changed=%v, error %v", tok != shared, err)
	}

	// IMS is back on the same address.
	ims.up()
	if err := otDial(ims.addr); err != nil {
		t.Fatalf("the emulator is up again but %s: %v", ims.addr, err)
	}
	t.Logf("outage lasted %s", time.Since(outageStart).Round(time.Millisecond))

	newDedicated, newLease, err := read("adobe/creds/dedicated")
	if err != nil {
		t.Fatalf("dedicated read after IMS came back: %v", err)
	}
	if newDedicated == oldDedicated || newDedicated == shared {
		t.Errorf("dedicated read after IMS came back returned a token it had handed out before")
	}
	for range 5 {
		if tok, _, err := read("adobe/creds/shared"); err != nil || tok != shared {
			t.Errorf("shared read after IMS came back: token changed=%v, error %v", tok != shared, err)
		}
	}
	// Only the one dedicated read went to IMS since the outage began: shared
	// readers neither retried nor replaced their token.
	after := ims.Stats()
	if got := after.TokenRequests - before.TokenRequests; got != 1 {
		t.Errorf("IMS saw %d token requests after the outage, want 1 (the dedicated read)", got)
	}

	// The lease whose revocation failed can be revoked now, and its token dies.
	if err := c.Sys().Revoke(oldLease.LeaseID); err != nil {
		t.Fatalf("revoking the dedicated lease after IMS came back: %v", err)
	}
	if ims.TokenValid(oldDedicated) {
		t.Errorf("the dedicated lease was revoked after the outage but its token is still valid at IMS")
	}
	if err := c.Sys().Revoke(newLease.LeaseID); err != nil {
		t.Fatalf("revoking the new dedicated lease: %v", err)
	}
	if ims.TokenValid(newDedicated) {
		t.Errorf("the new dedicated lease was revoked but its token is still valid at IMS")
	}
	if !ims.TokenValid(shared) {
		t.Errorf("the shared token is no longer valid at IMS")
	}
}

// otInfo reads adobe/info: the plugin's counters and, for the scope set
// scopes (sorted, comma-joined), the shared token's last_error.
func otInfo(t *testing.T, c *api.Client, scopes string) (map[string]int64, string) {
	t.Helper()
	s, err := c.Logical().Read("adobe/info")
	if err != nil || s == nil {
		t.Fatalf("read adobe/info: %v", err)
	}
	raw, _ := s.Data["counters"].(map[string]any)
	counters := map[string]int64{}
	for k, v := range raw {
		n, ok := v.(json.Number)
		if !ok {
			t.Fatalf("adobe/info counter %s is %T", k, v)
		}
		if counters[k], err = n.Int64(); err != nil {
			t.Fatalf("adobe/info counter %s: %v", k, err)
		}
	}
	var lastErr string
	list, _ := s.Data["shared_tokens"].([]any)
	for _, it := range list {
		m, _ := it.(map[string]any)
		var sc []string
		for _, x := range m["scopes"].([]any) {
			sc = append(sc, fmt.Sprint(x))
		}
		if strings.Join(sc, ",") == scopes {
			lastErr, _ = m["last_error"].(string)
		}
	}
	return counters, lastErr
}

// TestOutagePastRefreshPoint keeps IMS down while a shared token passes its
// refresh point and then its safe end: until the safe end the token keeps
// being served and no reader waits on IMS (the failed background refreshes
// are visible in adobe/info); after it, reads fail fast with a clear error
// rather than hand out a token at its end; once IMS is back a new token is
// minted on the next read.
func TestOutagePastRefreshPoint(t *testing.T) {
	const lifetime = 18 * time.Second // refresh point at 12s, safe end at 16.2s, reads until 14.4s
	ims := otStartEmulator(t, lifetime)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(ims.harness(), "verify=false")
	const scopes = "AdobeID,firefly_api,openid" // sorted, as adobe/info lists them
	v.mustCLI("write", "adobe/roles/shared", "scopes="+scopes)
	c := otClient(t, v)

	s, err := c.Logical().Read("adobe/creds/shared")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := otToken(s, ims.Emulator)
	if err != nil {
		t.Fatal(err)
	}
	var issuedAt time.Time
	for _, it := range ims.Tokens() {
		if it.AccessToken == tok {
			issuedAt = it.IssuedAt
		}
	}
	// The token's times, as IMS counts them. The plugin counts the lifetime
	// from just before its request, so its refresh point and safe end are a
	// little earlier: a read that starts after one of these reaches the
	// plugin after its own. A read meant to land before the safe end starts a
	// whole safety margin (a tenth of the lifetime, 1.8s here) before it, so
	// that a stall of Vault or of this loaded machine short of that cannot
	// push it past.
	margin := lifetime / 10
	refreshAt := issuedAt.Add(lifetime * 2 / 3)
	safeEnd := issuedAt.Add(lifetime - margin)
	lastStart := safeEnd.Add(-margin)

	ims.down()
	before, _ := otInfo(t, c, scopes)
	stats := ims.Stats()

	// Read every 200ms until a safety margin before the safe end.
	var reads, pastRefresh int
	var slowest time.Duration
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		<-tick.C
		start := time.Now()
		if start.After(lastStart) {
			break
		}
		s, err := c.Logical().Read("adobe/creds/shared")
		took := time.Since(start)
		slowest = max(slowest, took)
		reads++
		if start.After(refreshAt) {
			pastRefresh++
		}
		if err != nil {
			t.Fatalf("shared read %s after the mint, IMS down, token still before its safe end: %v", start.Sub(issuedAt).Round(time.Millisecond), err)
		}
		if got, _ := s.Data["access_token"].(string); got != tok {
			t.Fatalf("shared read %s after the mint, IMS down: got another token", start.Sub(issuedAt).Round(time.Millisecond))
		}
		if limit := safeEnd.Sub(start) + time.Second; time.Duration(s.LeaseDuration)*time.Second > limit {
			t.Errorf("lease of %ds issued %s before the token's safe end", s.LeaseDuration, safeEnd.Sub(start).Round(time.Millisecond))
		}
	}
	after, _ := otInfo(t, c, scopes)
	t.Logf("past refresh point: %d reads while IMS was down (%d past the refresh point), slowest %s; counters before %v after %v",
		reads, pastRefresh, slowest.Round(time.Millisecond), before, after)
	if pastRefresh < 3 {
		t.Fatalf("only %d reads happened between the refresh point and the safe end", pastRefresh)
	}
	if sr, hits := after["shared_reads"]-before["shared_reads"], after["cache_hits"]-before["cache_hits"]; sr != int64(reads) || hits != sr {
		t.Errorf("while the token was servable: %d shared reads counted for %d made, %d of them cache hits: a reader waited on IMS", sr, reads, hits)
	}
	if n := after["ims_http_attempts"] - before["ims_http_attempts"]; n < 1 {
		t.Errorf("no IMS request attempted past the refresh point: the background refresh did not start")
	}
	// The background refresh fails once its retries are spent, within the
	// bound on one IMS call; adobe/info then shows why.
	eventually(t, otIMSCallBound, "adobe/info to show the failed background refresh", func() error {
		now, lastErr := otInfo(t, c, scopes)
		if f := now["ims_token_failures"] - before["ims_token_failures"]; f < 1 {
			return errors.New("no failed IMS token request counted")
		}
		if !strings.Contains(lastErr, "connection refused") {
			return fmt.Errorf("last_error %q for %s does not name the refused connection", lastErr, scopes)
		}
		return nil
	})

	// Past the safe end (the plugin's is no later than IMS's) the token is
	// not handed out any more.
	for time.Now().Before(safeEnd) {
		<-tick.C
	}
	start := time.Now()
	s, err = c.Logical().Read("adobe/creds/shared")
	took := time.Since(start)
	if err == nil {
		got, _ := s.Data["access_token"].(string)
		t.Fatalf("shared read past the safe end with IMS down succeeded (same token: %v, lease %ds)", got == tok, s.LeaseDuration)
	}
	var re *api.ResponseError
	if !errors.As(err, &re) || re.StatusCode != http.StatusBadGateway || !strings.Contains(err.Error(), "Adobe IMS") || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("shared read past the safe end with IMS down: want a 502 naming Adobe IMS and the refused connection, got %v", err)
	}
	if took >= otIMSCallBound {
		t.Errorf("shared read past the safe end took %s, not within %s", took, otIMSCallBound)
	}
	t.Logf("past refresh point: shared read past the safe end failed after %s", took.Round(time.Millisecond))

	ims.up()
	s, err = c.Logical().Read("adobe/creds/shared")
	if err != nil {
		t.Fatalf("shared read after IMS came back: %v", err)
	}
	fresh, err := otToken(s, ims.Emulator)
	if err != nil || fresh == tok {
		t.Fatalf("shared read after IMS came back: want a new valid token, got same=%v err=%v", fresh == tok, err)
	}
	if n := ims.Stats().TokenRequests - stats.TokenRequests; n != 1 {
		t.Errorf("IMS saw %d token requests once back, want 1", n)
	}
	if again, err := c.Logical().Read("adobe/creds/shared"); err != nil || again.Data["access_token"] != fresh {
		t.Errorf("the next shared read did not reuse the new token: %v", err)
	}
}
