package imsemu

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

const (
	testClientID = "test-client-id"
	testSecret   = "test-secret-1"
	fireflyScope = "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"
)

var mgmtScope = strings.Join(managementScopes, ",")

// fakeClock is the emulator's clock in tests: expiry is reached by moving it, not by sleeping.
type fakeClock = testclock.Clock

type harness struct {
	t     *testing.T
	emu   *Emulator
	srv   *httptest.Server
	clock *fakeClock
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	clock := testclock.New(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	emu := New(Config{
		ClientID:     testClientID,
		ClientSecret: testSecret,
		Scopes:       append(strings.Split(fireflyScope, ","), managementScopes...),
		Now:          clock.Now,
	})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &harness{t: t, emu: emu, srv: srv, clock: clock}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// jsonMap decodes the body as one JSON object, failing the test otherwise.
func (r response) jsonMap(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q is not a JSON object: %v", r.body, err)
	}
	return m
}

// nonEmpty reports whether m[key] is a string other than "": comparing an
// any with "" would pass for a missing key or a value of another type.
func nonEmpty(m map[string]any, key string) bool {
	s, _ := m[key].(string)
	return s != ""
}

func (h *harness) do(req *http.Request) response {
	h.t.Helper()
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("reading body: %v", err)
	}
	if resp.Header.Get("x-debug-id") == "" {
		h.t.Errorf("%s %s -> %d without x-debug-id", req.Method, req.URL.Path, resp.StatusCode)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func (h *harness) request(method, path string, body io.Reader) *http.Request {
	h.t.Helper()
	req, err := http.NewRequest(method, h.srv.URL+path, body)
	if err != nil {
		h.t.Fatal(err)
	}
	return req
}

// postForm sends form in the body, with optional extra headers as name, value pairs.
func (h *harness) postForm(path string, form url.Values, headers ...string) response {
	h.t.Helper()
	req := h.request(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	return h.do(req)
}

func tokenForm(secret, scope string) url.Values {
	return url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {testClientID},
		"client_secret": {secret},
		"scope":         {scope},
	}
}

// mint obtains a token with the given secret and scope, failing the test otherwise.
func (h *harness) mint(secret, scope string) string {
	h.t.Helper()
	r := h.postForm(pathToken, tokenForm(secret, scope))
	if r.status != http.StatusOK {
		h.t.Fatalf("token request: %d %s", r.status, r.body)
	}
	tok, _ := r.jsonMap(h.t)["access_token"].(string)
	if tok == "" {
		h.t.Fatalf("no access_token in %s", r.body)
	}
	return tok
}

func TestEveryResponseHasFreshDebugID(t *testing.T) {
	h := newHarness(t)
	requests := []*http.Request{
		h.request(http.MethodGet, "/no/such/path", nil),
		h.request(http.MethodGet, pathToken, nil),
		h.request(http.MethodPost, pathValidate, nil),
		h.request(http.MethodGet, prefixManagement+"x/credentials/y/secrets", nil),
	}
	seen := map[string]bool{}
	for _, req := range requests {
		id := h.do(req).header.Get("x-debug-id") // do fails the test when it is missing
		if seen[id] {
			t.Errorf("x-debug-id %q repeated", id)
		}
		seen[id] = true
	}
}

func TestUnknownPathIs404(t *testing.T) {
	h := newHarness(t)
	if r := h.do(h.request(http.MethodGet, "/ims/token/v2", nil)); r.status != http.StatusNotFound {
		t.Errorf("status %d, want 404", r.status)
	}
	if got := h.emu.Stats(); got != (Stats{}) {
		t.Errorf("unknown path counted: %+v", got)
	}
}

func TestLatencyDelaysAnswers(t *testing.T) {
	h := newHarness(t)
	h.emu.SetLatency(80 * time.Millisecond)
	start := time.Now()
	h.mint(testSecret, "openid")
	if elapsed := time.Since(start); elapsed < 80*time.Millisecond {
		t.Errorf("answered after %v, want at least 80ms", elapsed)
	}
	h.emu.SetLatency(0)
}

func TestLatencyGivesUpWithTheClient(t *testing.T) {
	h := newHarness(t)
	h.emu.SetLatency(time.Hour)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	req := h.request(http.MethodPost, pathToken, strings.NewReader(tokenForm(testSecret, "openid").Encode())).WithContext(ctx)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := h.srv.Client().Do(req)
	if err == nil {
		resp.Body.Close()
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
	// srv.Close in Cleanup waits for the handler: it returns only because it honours the
	// request context. Nothing was issued meanwhile.
	if got := h.emu.Stats().TokensIssued; got != 0 {
		t.Errorf("TokensIssued = %d, want 0", got)
	}
}

func TestConcurrentTokensAreUnique(t *testing.T) {
	h := newHarness(t)
	const n = 20
	tokens := make(chan string, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var body tokenResponse
			resp, err := h.srv.Client().PostForm(h.srv.URL+pathToken, tokenForm(testSecret, "openid"))
			if err == nil {
				err = json.NewDecoder(resp.Body).Decode(&body)
				resp.Body.Close()
			}
			if err != nil {
				t.Error(err)
			}
			tokens <- body.AccessToken
		})
	}
	wg.Wait()
	close(tokens)
	seen := map[string]bool{}
	for tok := range tokens {
		if tok == "" || seen[tok] {
			t.Errorf("empty or repeated token %q", tok)
		}
		seen[tok] = true
	}
	if got := len(h.emu.Tokens()); got != n {
		t.Errorf("Tokens() has %d entries, want %d", got, n)
	}
	if got := h.emu.Stats(); got.TokenRequests != n || got.TokensIssued != n {
		t.Errorf("stats %+v, want %d requests and tokens", got, n)
	}
}

func TestResetStats(t *testing.T) {
	h := newHarness(t)
	h.mint(testSecret, "openid")
	if h.emu.Stats().TokensIssued != 1 {
		t.Fatalf("TokensIssued = %d, want 1", h.emu.Stats().TokensIssued)
	}
	h.emu.ResetStats()
	if got := h.emu.Stats(); got != (Stats{}) {
		t.Errorf("after reset: %+v", got)
	}
}

func TestConfigDefaults(t *testing.T) {
	e := New(Config{ClientID: "c", ClientSecret: "s"})
	if e.orgID != DefaultOrgID || e.credentialID != DefaultCredentialID || e.expiresIn != DefaultExpiresIn {
		t.Errorf("defaults: org %q credential %q expires %v", e.orgID, e.credentialID, e.expiresIn)
	}
	if len(e.Secrets()) != 1 || !e.SecretAccepted("s") || e.SecretAccepted("") {
		t.Errorf("initial secret not set up: %+v", e.Secrets())
	}
	if New(Config{ClientID: "c"}).SecretAccepted("") {
		t.Error("an empty secret is accepted")
	}
}
