package adobeims

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// callAdobeAPI calls the emulator's Adobe API stand-in with token the way an
// application does with what creds returned, and returns the HTTP status:
// 200 while IMS holds the token valid, 401 once it does not.
func callAdobeAPI(t *testing.T, e *testEnv, token string) int {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, e.srv.URL+imsemu.APIPath, strings.NewReader(`{"prompt":"a lighthouse at dusk"}`))
	if err != nil {
		t.Fatalf("preparing the API call: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("x-api-key", testClientID)
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatalf("calling the API stand-in: %v", err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body) // the status is the answer
	return resp.StatusCode
}

// TestDedicatedRevokeEndsTheLeaseWithoutInvalidating covers the known limit
// of dedicated leases: when the plugin cannot or may not invalidate the
// token, revoking the lease still succeeds, so Vault ends the lease and does
// not retry, and the token keeps working at Adobe until it expires. That
// happens when the config was deleted, when IMS refuses the invalidation
// with a 4xx other than 429, and when the config now holds another
// client_id. Two controls show the check can tell: with the config
// unchanged the revoked token is refused, and a 429 fails the revocation so
// that Vault retries it.
func TestDedicatedRevokeEndsTheLeaseWithoutInvalidating(t *testing.T) {
	refuse := func(status int) func(e *testEnv) {
		return func(e *testEnv) {
			e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointInvalidate, Kind: imsemu.KindStatus, Status: status})
		}
	}
	for _, tc := range []struct {
		name   string
		change func(e *testEnv)
		// invalidations is how many invalidate requests reach IMS: none
		// when the plugin has no credential the lease's token belongs to.
		invalidations int
		// log is what the plugin logs about the token left valid.
		log string
		// retried: the revocation fails so that Vault retries it.
		retried bool
		// invalidated: the control where the token dies with its lease.
		invalidated bool
	}{
		{name: "config deleted", change: func(e *testEnv) { e.mustOK(e.request("delete", "config", nil)) },
			log: "config was deleted: ending a dedicated lease without invalidating its token at IMS; it expires on its own"},
		{name: "IMS refuses with 400", change: refuse(http.StatusBadRequest), invalidations: 1,
			log: "IMS refused to invalidate a dedicated token; ending the lease anyway, the token expires on its own"},
		{name: "IMS refuses with 401", change: refuse(http.StatusUnauthorized), invalidations: 1,
			log: "IMS refused to invalidate a dedicated token; ending the lease anyway, the token expires on its own"},
		{name: "IMS refuses with 403", change: refuse(http.StatusForbidden), invalidations: 1,
			log: "IMS refused to invalidate a dedicated token; ending the lease anyway, the token expires on its own"},
		{name: "IMS refuses the stored secret", invalidations: 1,
			change: func(e *testEnv) {
				// Another node stored a secret IMS does not know: IMS's
				// own 400 invalid_client, no injected fault.
				e.changeStoredConfig(func(c *config) { c.ClientSecret = "p8e-Wq4Xn7Rb2Kd9Lm5Vt3Hc8Jz1" })
				e.b.invalidate(e.t.Context(), configStorageKey)
			},
			log: "IMS refused to invalidate a dedicated token; ending the lease anyway, the token expires on its own"},
		{name: "config holds another client_id", change: func(e *testEnv) {
			e.mustOK(e.write("config", map[string]any{keyClientID: "another-client-id", keyClientSecret: "p8e-Yh6Tp3Ns8Fq2Gw7Mk4Bd9Xc5", keyVerify: false}))
		}, log: "the config now holds another credential: ending a dedicated lease without invalidating its token at IMS; it expires on its own"},

		{name: "control: config unchanged", change: func(*testEnv) {}, invalidations: 1, invalidated: true},
		{name: "control: IMS throttles with 429", change: refuse(http.StatusTooManyRequests), invalidations: 1, retried: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(nil)
			e.mustOK(e.write("roles/d", map[string]any{"scopes": "firefly_api,openid", "mode": "dedicated"}))
			lease := e.creds("creds/d")
			token, _ := lease.Data[keyAccessToken].(string)
			if status := callAdobeAPI(t, e, token); status != http.StatusOK {
				t.Fatalf("the fresh dedicated token got HTTP %d from the API, want 200", status)
			}
			e.emu.ResetStats()

			tc.change(e)
			err := e.revoke(lease.Secret)
			switch {
			case tc.retried && (err == nil || !strings.Contains(err.Error(), "Vault retries")):
				t.Fatalf("revoke = %v, want an error so that Vault retries", err)
			case !tc.retried && err != nil:
				t.Fatalf("revoke failed, so Vault would keep the lease and retry: %v", err)
			}
			if got := e.emu.Stats().InvalidateRequests; got != tc.invalidations {
				t.Errorf("IMS got %d invalidate requests, want %d", got, tc.invalidations)
			}

			status := callAdobeAPI(t, e, token)
			switch {
			case tc.invalidated && status != http.StatusUnauthorized:
				t.Fatalf("the API answered HTTP %d to the revoked token, want 401: it was not invalidated", status)
			case !tc.invalidated && status != http.StatusOK:
				t.Fatalf("the API answered HTTP %d to the token, want 200: it should stay valid until it expires", status)
			}
			if tc.log != "" && !strings.Contains(e.logs.String(), tc.log) {
				t.Errorf("the log does not say %q:\n%s", tc.log, e.logs.String())
			}
		})
	}
}
