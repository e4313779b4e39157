package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// pluginCallBound is the plugin's bound on one IMS call, retries included
// (imsCallBound in backend.go); a read may add Vault's own overhead.
const pluginCallBound = 30 * time.Second

// TestFaultMatrixThroughVault drives each IMS failure through a real Vault:
// the HTTP response is a 502 that names what IMS said and what to check, it
// comes within the plugin's bound, and nothing is cached: once IMS recovers
// the next read mints exactly one token.
func TestFaultMatrixThroughVault(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu, "verify=false")
	v.mustCLI("write", "adobe/roles/r", "scopes=openid,firefly_api")

	tlsSrv := httptest.NewTLSServer(emu)
	t.Cleanup(tlsSrv.Close)
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedURL := "http://" + closed.Addr().String()
	closed.Close()

	cases := []struct {
		name   string
		fault  *imsemu.Fault
		imsURL string // instead of a fault
		want   []string
	}{
		{name: "429 with Retry-After", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 429, RetryAfter: "1"}, want: []string{"HTTP 429", "x-debug-id"}},
		{name: "500", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 500}, want: []string{"HTTP 500", "x-debug-id"}},
		{name: "503", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 503}, want: []string{"HTTP 503"}},
		{name: "never answers", fault: &imsemu.Fault{Kind: imsemu.KindHang}, want: []string{"Adobe IMS"}},
		{name: "malformed JSON", fault: &imsemu.Fault{Kind: imsemu.KindMalformedJSON}, want: []string{"JSON"}},
		{name: "HTML error page", fault: &imsemu.Fault{Kind: imsemu.KindHTML}, want: []string{"text/html"}},
		{name: "no access_token", fault: &imsemu.Fault{Kind: imsemu.KindNoAccessToken}, want: []string{"access_token"}},
		{name: "expires_in 0", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "0"}, want: []string{"expires_in"}},
		{name: "expires_in negative", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "-5"}, want: []string{"expires_in"}},
		{name: "expires_in string", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: `"3600"`}, want: []string{"expires_in"}},
		{name: "expires_in absurd", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "99999999999"}, want: []string{"expires_in"}},
		{name: "invalid_client", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_client"}, want: []string{"invalid_client", "client_secret"}},
		{name: "invalid_scope", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_scope"}, want: []string{"invalid_scope", "scopes"}},
		{name: "connection refused", imsURL: refusedURL, want: []string{"refused"}},
		{name: "untrusted TLS certificate", imsURL: tlsSrv.URL, want: []string{"certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.imsURL != "" {
				// Moving ims_url needs the secret in the same write.
				moveIMS := func(url string) {
					if out, err := v.cliAs(rootToken, testClientSecret, "write", "adobe/config", "ims_url="+url, "client_secret=-", "verify=false"); err != nil {
						t.Fatalf("moving ims_url to %s: %v\n%s", url, err, out)
					}
				}
				moveIMS(tc.imsURL)
				t.Cleanup(func() { moveIMS(emu.URL) })
			}
			if tc.fault != nil {
				f := *tc.fault
				f.Endpoint = imsemu.EndpointToken
				emu.SetFault(&f)
			}

			start := time.Now()
			status, body := ftRead(t, v, "adobe/creds/r")
			elapsed := time.Since(start)
			emu.SetFault(nil)

			if status != http.StatusBadGateway {
				t.Errorf("status %d, want 502; body %s", status, body)
			}
			for _, w := range append([]string{"Adobe IMS"}, tc.want...) {
				if !strings.Contains(body, w) {
					t.Errorf("error does not mention %q: %s", w, body)
				}
			}
			if strings.Contains(body, testClientSecret) {
				t.Error("the error contains the client secret")
			}
			if elapsed > pluginCallBound+5*time.Second {
				t.Errorf("the read took %s; the plugin's bound is %s", elapsed, pluginCallBound)
			}
			t.Logf("failed in %s", elapsed.Round(time.Millisecond))
		})
	}

	// Nothing was cached: IMS is healthy again and the next read mints once.
	before := emu.Stats().TokensIssued
	if status, body := ftRead(t, v, "adobe/creds/r"); status != http.StatusOK {
		t.Fatalf("read after the faults: %d %s", status, body)
	}
	if got := emu.Stats().TokensIssued - before; got != 1 {
		t.Fatalf("the read after the faults minted %d tokens, want 1 (a fault left something cached)", got)
	}

	// The counters say what happened, in Prometheus text through Vault's API.
	status, metrics := ftRead(t, v, "adobe/metrics")
	if status != http.StatusOK {
		t.Fatalf("metrics: %d %s", status, metrics)
	}
	for _, name := range []string{"adobe_ims_token_failures_total", "adobe_ims_http_retries_total", "adobe_ims_token_requests_total"} {
		var n int
		for _, line := range strings.Split(metrics, "\n") {
			if strings.HasPrefix(line, name+" ") {
				if _, err := fmt.Sscanf(strings.TrimPrefix(line, name+" "), "%d", &n); err != nil {
					t.Errorf("metric line %q: %v", line, err)
				}
			}
		}
		if n == 0 {
			t.Errorf("metric %s is 0 or missing after %d failed reads:\n%s", name, len(cases), metrics)
		}
	}
}

// ftRead GETs a path over Vault's HTTP API and returns the status and body.
func ftRead(t *testing.T, v *vaultServer, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+v.addr+"/v1/"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", v.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}
