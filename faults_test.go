package adobeims

import (
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// testCallBound is the IMS call bound the test backend runs with
// (ims.Options.MaxElapsed in newTestEnv); production uses imsCallBound.
const testCallBound = 5 * time.Second

// TestFaultMatrix drives every IMS failure through a creds read: the Vault
// error names what IMS said and what to check, nothing is cached, the read
// ends within the call bound, and no goroutine is left behind.
func TestFaultMatrix(t *testing.T) {
	cases := []struct {
		name  string
		fault *imsemu.Fault
		setup func(e *testEnv) // instead of a fault
		want  []string
	}{
		{name: "429 with Retry-After", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 429, RetryAfter: "1"}, want: []string{"HTTP 429", "x-debug-id"}},
		{name: "500", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 500}, want: []string{"HTTP 500", "x-debug-id"}},
		{name: "503", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 503}, want: []string{"HTTP 503"}},
		{name: "connection dropped", fault: &imsemu.Fault{Kind: imsemu.KindDrop}, want: []string{"IMS"}},
		{name: "never answers", fault: &imsemu.Fault{Kind: imsemu.KindHang}, want: []string{"IMS"}},
		{name: "malformed JSON", fault: &imsemu.Fault{Kind: imsemu.KindMalformedJSON}, want: []string{"JSON"}},
		{name: "HTML error page", fault: &imsemu.Fault{Kind: imsemu.KindHTML}, want: []string{"text/html", "502"}},
		{name: "no access_token", fault: &imsemu.Fault{Kind: imsemu.KindNoAccessToken}, want: []string{"access_token"}},
		{name: "expires_in 0", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "0"}, want: []string{"expires_in"}},
		{name: "expires_in negative", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "-5"}, want: []string{"expires_in"}},
		{name: "expires_in string", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: `"3600"`}, want: []string{"expires_in"}},
		{name: "expires_in absurd", fault: &imsemu.Fault{Kind: imsemu.KindExpiresIn, ExpiresInRaw: "99999999999"}, want: []string{"expires_in"}},
		{name: "invalid_client", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_client"}, want: []string{"invalid_client", "client_secret"}},
		{name: "invalid_scope", fault: &imsemu.Fault{Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_scope"}, want: []string{"invalid_scope", "scopes"}},
		{name: "connection refused", setup: func(e *testEnv) { e.srv.Close() }, want: []string{"refused"}},
		{name: "untrusted TLS certificate", setup: func(e *testEnv) {
			tlsSrv := httptest.NewTLSServer(e.emu)
			e.t.Cleanup(tlsSrv.Close)
			e.mustOK(e.write("config", map[string]any{"ims_url": tlsSrv.URL, "client_secret": testClientSecret, "verify": false}))
		}, want: []string{"certificate"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(map[string]any{"verify": false})
			if tc.fault != nil {
				f := *tc.fault
				f.Endpoint = imsemu.EndpointToken
				e.emu.SetFault(&f)
			}
			if tc.setup != nil {
				tc.setup(e)
			}
			goroutines := runtime.NumGoroutine()

			start := time.Now()
			resp, err := e.read("creds")
			elapsed := time.Since(start)

			msg := e.mustFail(resp, err, tc.want...)
			if !strings.Contains(msg, "Adobe IMS") {
				t.Errorf("error %q does not say Adobe IMS failed", msg)
			}
			if coded, ok := err.(logical.HTTPCodedError); !ok || coded.Code() != http.StatusBadGateway { //nolint:errorlint // Vault's RespondErrorCommon uses a plain type assertion; a wrapped coded error would lose its 502
				t.Errorf("want a 502 coded error, got %T %v", err, err)
			}
			if elapsed > testCallBound+time.Second {
				t.Errorf("the read took %s; the bound is %s", elapsed, testCallBound)
			}
			for _, s := range e.b.cache.States() {
				if !s.ExpiresAt.IsZero() {
					t.Errorf("a failed mint cached a token: %+v", s)
				}
			}
			e.srv.CloseClientConnections()
			waitFor(t, "goroutines to settle", func() bool { return runtime.NumGoroutine() <= goroutines })
		})
	}
}
