package imsemu

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// control calls the control API and returns status and body.
func control(t *testing.T, srv *httptest.Server, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func newControl(t *testing.T) (*harness, *httptest.Server) {
	h := newHarness(t)
	ctl := httptest.NewServer(h.emu.ControlHandler())
	t.Cleanup(ctl.Close)
	return h, ctl
}

func TestControlStatsAndTokens(t *testing.T) {
	h, ctl := newControl(t)
	token := h.mint(testSecret, "openid,AdobeID")

	status, body := control(t, ctl, "GET", "/stats", "")
	var stats Stats
	if err := json.Unmarshal([]byte(body), &stats); err != nil || status != 200 || stats.TokensIssued != 1 ||
		!strings.Contains(body, `"tokens_issued":1`) {
		t.Errorf("GET /stats: %d %s", status, body)
	}
	if status, _ := control(t, ctl, "POST", "/stats/reset", ""); status != 204 || h.emu.Stats() != (Stats{}) {
		t.Errorf("POST /stats/reset: %d, stats %+v", status, h.emu.Stats())
	}

	status, body = control(t, ctl, "GET", "/tokens", "")
	var tokens []map[string]any
	if err := json.Unmarshal([]byte(body), &tokens); err != nil || status != 200 || len(tokens) != 1 ||
		tokens[0]["access_token"] != token || !nonEmpty(tokens[0], "secret_uuid") || tokens[0]["invalidated"] != false {
		t.Errorf("GET /tokens: %d %s", status, body)
	}

	for tok, want := range map[string]string{token: `{"valid":true}`, "bogus": `{"valid":false}`} {
		if status, body := control(t, ctl, "GET", "/tokens/valid?token="+url.QueryEscape(tok), ""); status != 200 || body != want {
			t.Errorf("GET /tokens/valid: %d %s, want %s", status, body, want)
		}
	}
}

func TestControlFault(t *testing.T) {
	h, ctl := newControl(t)
	if status, body := control(t, ctl, "GET", "/fault", ""); status != 200 || body != "null" {
		t.Errorf("GET /fault without one: %d %s", status, body)
	}
	f := `{"endpoint":"token","kind":"status","status":429,"retry_after":"3","times":1}`
	if status, body := control(t, ctl, "POST", "/fault", f); status != 204 {
		t.Fatalf("POST /fault: %d %s", status, body)
	}
	if status, body := control(t, ctl, "GET", "/fault", ""); status != 200 || body != f {
		t.Errorf("GET /fault: %d %s, want %s", status, body, f)
	}
	r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
	if r.status != 429 || r.header.Get("Retry-After") != "3" {
		t.Errorf("faulted token request: %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if h.emu.Fault() != nil {
		t.Error("times:1 fault not cleared")
	}

	if status, _ := control(t, ctl, "POST", "/fault", `{"kind":"hang"}`); status != 204 || h.emu.Fault() == nil {
		t.Fatalf("POST /fault hang: %d", status)
	}
	if status, _ := control(t, ctl, "DELETE", "/fault", ""); status != 204 || h.emu.Fault() != nil {
		t.Errorf("DELETE /fault: %d, fault %+v", status, h.emu.Fault())
	}

	for _, bad := range []string{`{"kind":"teapot"}`, `{"kind":"status","stauts":500}`, `not json`} {
		if status, body := control(t, ctl, "POST", "/fault", bad); status != 400 || !strings.Contains(body, `"error"`) {
			t.Errorf("POST /fault %s: %d %s, want 400", bad, status, body)
		}
	}
	if h.emu.Fault() != nil {
		t.Error("a refused fault was installed")
	}
}

func TestControlExpiresInAndLatency(t *testing.T) {
	h, ctl := newControl(t)
	if status, _ := control(t, ctl, "POST", "/expires_in", `{"seconds":60}`); status != 204 {
		t.Fatalf("POST /expires_in: %d", status)
	}
	if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.jsonMap(t)["expires_in"] != float64(60) {
		t.Errorf("after /expires_in 60: %s", r.body)
	}
	if status, _ := control(t, ctl, "POST", "/expires_in", `{"seconds":0}`); status != 400 {
		t.Errorf("seconds 0: %d, want 400", status)
	}

	if status, _ := control(t, ctl, "POST", "/latency", `{"ms":25}`); status != 204 {
		t.Fatalf("POST /latency: %d", status)
	}
	status, body := control(t, ctl, "GET", "/config", "")
	var cfg controlConfig
	if err := json.Unmarshal([]byte(body), &cfg); err != nil || status != 200 || cfg.LatencyMS != 25 || cfg.ExpiresInSeconds != 60 ||
		cfg.ClientID != testClientID || cfg.OrgID != DefaultOrgID || cfg.CredentialID != DefaultCredentialID || len(cfg.Scopes) == 0 {
		t.Errorf("GET /config: %d %s", status, body)
	}
	start := time.Now()
	h.mint(testSecret, "openid")
	if time.Since(start) < 25*time.Millisecond {
		t.Error("latency not applied")
	}
	if status, _ := control(t, ctl, "POST", "/latency", `{"ms":-1}`); status != 400 {
		t.Errorf("ms -1: %d, want 400", status)
	}
}

func TestControlSecrets(t *testing.T) {
	h, ctl := newControl(t)
	h.mint(testSecret, "openid")
	status, body := control(t, ctl, "GET", "/secrets", "")
	var secrets []map[string]any
	if err := json.Unmarshal([]byte(body), &secrets); err != nil || status != 200 || len(secrets) != 1 ||
		secrets[0]["uuid"] != h.emu.Secrets()[0].UUID || secrets[0]["last_used_at"] == nil || strings.Contains(body, testSecret) {
		t.Errorf("GET /secrets: %d %s", status, body)
	}
	for secret, want := range map[string]string{testSecret: `{"accepted":true}`, "nope": `{"accepted":false}`} {
		if status, body := control(t, ctl, "GET", "/secrets/accepted?secret="+url.QueryEscape(secret), ""); status != 200 || body != want {
			t.Errorf("GET /secrets/accepted: %d %s, want %s", status, body, want)
		}
	}
}

func TestControlUnknownAndWrongMethod(t *testing.T) {
	_, ctl := newControl(t)
	if status, _ := control(t, ctl, "GET", "/nope", ""); status != 404 {
		t.Errorf("unknown path: %d", status)
	}
	if status, _ := control(t, ctl, "POST", "/stats", ""); status != 405 {
		t.Errorf("POST /stats: %d, want 405", status)
	}
}

func TestControlRateLimit(t *testing.T) {
	tests := []struct {
		name   string
		body   string
		status int
		// want is GET /rate_limit afterwards, when the POST was accepted.
		want string
		// then are the statuses and Retry-After headers of three token requests in a row.
		then       []int
		retryAfter string
		noHeader   bool
	}{
		{name: "computed", body: `{"requests":2,"per_ms":60000}`, status: 204,
			want: `{"requests":2,"per_ms":60000,"retry_after_seconds":0,"no_retry_after":false}`,
			then: []int{200, 200, 429}, retryAfter: "60"},
		{name: "fixed", body: `{"requests":1,"per_ms":60000,"retry_after_seconds":7}`, status: 204,
			want: `{"requests":1,"per_ms":60000,"retry_after_seconds":7,"no_retry_after":false}`,
			then: []int{200, 429, 429}, retryAfter: "7"},
		{name: "without Retry-After", body: `{"requests":1,"per_ms":1000,"no_retry_after":true}`, status: 204,
			want: `{"requests":1,"per_ms":1000,"retry_after_seconds":0,"no_retry_after":true}`,
			then: []int{200, 429, 429}, noHeader: true},
		{name: "off", body: `{"requests":0}`, status: 204,
			want: `{"requests":0,"per_ms":0,"retry_after_seconds":0,"no_retry_after":false}`,
			then: []int{200, 200, 200}},
		{name: "negative requests", body: `{"requests":-1,"per_ms":1000}`, status: 400},
		{name: "no window", body: `{"requests":3}`, status: 400},
		{name: "negative retry_after_seconds", body: `{"requests":3,"per_ms":1000,"retry_after_seconds":-1}`, status: 400},
		{name: "both Retry-After choices", body: `{"requests":3,"per_ms":1000,"retry_after_seconds":5,"no_retry_after":true}`, status: 400},
		{name: "unknown field", body: `{"requests":3,"per":"1m"}`, status: 400},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, ctl := newControl(t)
			status, body := control(t, ctl, "POST", "/rate_limit", tc.body)
			if status != tc.status {
				t.Fatalf("POST /rate_limit: %d %s, want %d", status, body, tc.status)
			}
			if status != 204 {
				if !strings.Contains(body, `"error"`) || h.emu.RateLimit().Enabled() {
					t.Errorf("refused: body %s, limit %+v", body, h.emu.RateLimit())
				}
				return
			}
			if _, got := control(t, ctl, "GET", "/rate_limit", ""); got != tc.want {
				t.Errorf("GET /rate_limit: %s, want %s", got, tc.want)
			}
			_, cfg := control(t, ctl, "GET", "/config", "")
			if !strings.Contains(cfg, `"rate_limit":`+tc.want) {
				t.Errorf("GET /config: %s, want rate_limit %s", cfg, tc.want)
			}
			for i, want := range tc.then {
				r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
				if r.status != want {
					t.Fatalf("token request %d: %d, want %d", i, r.status, want)
				}
				if want != 429 {
					continue
				}
				if got, present := r.header.Get("Retry-After"), len(r.header.Values("Retry-After")) > 0; got != tc.retryAfter || present == tc.noHeader {
					t.Errorf("token request %d: Retry-After %q (present %v), want %q", i, got, present, tc.retryAfter)
				}
			}
			if status, _ := control(t, ctl, "DELETE", "/rate_limit", ""); status != 204 || h.emu.RateLimit().Enabled() {
				t.Errorf("DELETE /rate_limit: %d, limit %+v", status, h.emu.RateLimit())
			}
			h.mint(testSecret, "openid")
			var stats Stats
			_, sb := control(t, ctl, "GET", "/stats", "")
			if err := json.Unmarshal([]byte(sb), &stats); err != nil || stats != h.emu.Stats() ||
				!strings.Contains(sb, `"token_throttled":`) || !strings.Contains(sb, `"token_in_flight_peak":1`) {
				t.Errorf("GET /stats: %s", sb)
			}
		})
	}
}

func TestControlWrongSecretStatus(t *testing.T) {
	tests := []struct {
		body       string
		status     int
		wantConfig int // wrong_secret_status in GET /config afterwards
		tokenWrong int // status of a token request with a wrong secret afterwards
	}{
		{`{"status":401}`, 204, 401, 401},
		{`{"status":400}`, 204, 400, 400},
		{`{"status":403}`, 400, 400, 400},
		{`{"status":"401"}`, 400, 400, 400},
		{`{}`, 400, 400, 400},
	}
	for _, tc := range tests {
		t.Run(tc.body, func(t *testing.T) {
			h, ctl := newControl(t)
			if status, body := control(t, ctl, "POST", "/wrong_secret_status", tc.body); status != tc.status {
				t.Fatalf("POST /wrong_secret_status %s: %d %s, want %d", tc.body, status, body, tc.status)
			}
			_, body := control(t, ctl, "GET", "/config", "")
			var cfg controlConfig
			if err := json.Unmarshal([]byte(body), &cfg); err != nil || cfg.WrongSecretStatus != tc.wantConfig {
				t.Errorf("GET /config: %s, want wrong_secret_status %d", body, tc.wantConfig)
			}
			if r := h.postForm(pathToken, tokenForm("nope", "openid")); r.status != tc.tokenWrong || r.jsonMap(t)["error"] != "invalid_client" {
				t.Errorf("wrong secret: %d %s, want %d invalid_client", r.status, r.body, tc.tokenWrong)
			}
		})
	}
}
