package imsemu

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestFaultStatus(t *testing.T) {
	tests := []struct {
		name       string
		fault      Fault
		status     int
		code       string
		retryAfter string
	}{
		{"default 503", Fault{Kind: KindStatus, RetryAfter: "7"}, 503, "temporarily_unavailable", "7"},
		{"429", Fault{Kind: KindStatus, Status: 429, RetryAfter: "2"}, 429, "temporarily_unavailable", "2"},
		{"500", Fault{Kind: KindStatus, Status: 500}, 500, "server_error", ""},
		{"400 with code", Fault{Kind: KindStatus, Status: 400, ErrorCode: "invalid_client"}, 400, "invalid_client", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.emu.SetFault(&tc.fault)
			r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
			body := r.jsonMap(t)
			if r.status != tc.status || body["error"] != tc.code || !nonEmpty(body, "error_description") {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if got := r.header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
			if got := h.emu.Stats(); got.FaultsServed != 1 || got.TokenRequests != 1 || got.TokensIssued != 0 {
				t.Errorf("stats %+v", got)
			}
		})
	}
}

func TestFaultStatusOnManagementUsesItsErrorShape(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)
	h.emu.SetFault(&Fault{Endpoint: EndpointManagement, Kind: KindStatus, Status: 503})
	r := h.mgmt(http.MethodGet, secretsPath, token, testClientID)
	if body := r.jsonMap(t); r.status != 503 || body["error_code"] != "temporarily_unavailable" || !nonEmpty(body, "message") {
		t.Errorf("got %d %s", r.status, r.body)
	}
}

func TestFaultBodies(t *testing.T) {
	tests := []struct {
		name   string
		fault  Fault
		status int
		ctype  string
		check  func(t *testing.T, body []byte)
	}{
		{"malformed_json", Fault{Kind: KindMalformedJSON}, 200, "application/json", func(t *testing.T, body []byte) {
			if json.Valid(body) || len(body) == 0 {
				t.Errorf("body %q should be broken JSON", body)
			}
		}},
		{"html default", Fault{Kind: KindHTML}, 502, "text/html", func(t *testing.T, body []byte) {
			if !strings.Contains(string(body), "<html>") || !strings.Contains(string(body), "502 Bad Gateway") {
				t.Errorf("body %q", body)
			}
		}},
		{"html 504", Fault{Kind: KindHTML, Status: 504}, 504, "text/html", func(t *testing.T, body []byte) {
			if !strings.Contains(string(body), "504 Gateway Timeout") {
				t.Errorf("body %q", body)
			}
		}},
		{"no_access_token", Fault{Kind: KindNoAccessToken}, 200, "application/json", func(t *testing.T, body []byte) {
			var m map[string]any
			if err := json.Unmarshal(body, &m); err != nil {
				t.Fatal(err)
			}
			if _, ok := m["access_token"]; ok || m["token_type"] != "bearer" {
				t.Errorf("body %s", body)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.emu.SetFault(&tc.fault)
			r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
			if r.status != tc.status || !strings.HasPrefix(r.header.Get("Content-Type"), tc.ctype) {
				t.Errorf("got %d %q, want %d %q", r.status, r.header.Get("Content-Type"), tc.status, tc.ctype)
			}
			tc.check(t, r.body)
			if got := h.emu.Stats().FaultsServed; got != 1 {
				t.Errorf("FaultsServed = %d", got)
			}
		})
	}
}

func TestFaultExpiresIn(t *testing.T) {
	for _, raw := range []string{`0`, `-5`, `"3600"`, `99999999999`, `null`} {
		t.Run(raw, func(t *testing.T) {
			h := newHarness(t)
			h.emu.SetFault(&Fault{Endpoint: EndpointToken, Kind: KindExpiresIn, ExpiresInRaw: raw})
			r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
			var body struct {
				AccessToken string          `json:"access_token"`
				TokenType   string          `json:"token_type"`
				ExpiresIn   json.RawMessage `json:"expires_in"`
			}
			if err := json.Unmarshal(r.body, &body); err != nil {
				t.Fatalf("body %q: %v", r.body, err)
			}
			if r.status != 200 || string(body.ExpiresIn) != raw || body.TokenType != "bearer" {
				t.Errorf("got %d %s, want expires_in %s", r.status, r.body, raw)
			}
			if !h.emu.TokenValid(body.AccessToken) {
				t.Error("the fault's token is not recorded as issued")
			}
		})
	}
}

func TestFaultHangUntilClientGivesUp(t *testing.T) {
	h := newHarness(t)
	h.emu.SetFault(&Fault{Kind: KindHang})
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
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
	// The handler must return once the client is gone, or srv.Close in Cleanup blocks.
	if got := h.emu.Stats().FaultsServed; got != 1 {
		t.Errorf("FaultsServed = %d", got)
	}
}

func TestFaultHangReturnsOnCancel(t *testing.T) {
	e := New(Config{ClientID: testClientID, ClientSecret: testSecret})
	e.SetFault(&Fault{Kind: KindHang})
	ctx, cancel := context.WithCancel(t.Context())
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		e.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, pathToken, nil))
		close(done)
	}()
	select {
	case <-done:
		t.Fatal("hang answered before the client gave up")
	case <-time.After(50 * time.Millisecond): // a window to show it does not answer on its own
	}
	cancel()
	<-done
	if rec.Body.Len() != 0 {
		t.Errorf("hang wrote %q", rec.Body.String())
	}
}

func TestFaultDropClosesConnection(t *testing.T) {
	h := newHarness(t)
	h.emu.SetFault(&Fault{Kind: KindDrop, Times: 1})
	resp, err := h.srv.Client().PostForm(h.srv.URL+pathToken, tokenForm(testSecret, "openid"))
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got HTTP %d, want a dropped connection", resp.StatusCode)
	}
	if got := h.emu.Stats().FaultsServed; got != 1 {
		t.Errorf("FaultsServed = %d", got)
	}
	h.mint(testSecret, "openid") // Times: 1 used up
}

func TestFaultDropWithoutHijackAborts(t *testing.T) {
	e := New(Config{ClientID: testClientID})
	e.SetFault(&Fault{Kind: KindDrop})
	defer func() {
		if p := recover(); p != http.ErrAbortHandler { //nolint:errorlint // recover() yields the panic value itself, never a wrapped error; net/http compares it the same way
			t.Errorf("recovered %v, want http.ErrAbortHandler", p)
		}
	}()
	e.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, pathToken, nil))
}

func TestFaultTimesCountsDown(t *testing.T) {
	h := newHarness(t)
	f := &Fault{Endpoint: EndpointToken, Kind: KindStatus, Status: 503, Times: 2}
	h.emu.SetFault(f)
	f.Times = 99 // SetFault keeps a copy

	for i, want := range []int{503, 503, 200} {
		if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.status != want {
			t.Errorf("request %d: %d, want %d", i+1, r.status, want)
		}
		switch left := h.emu.Fault(); i {
		case 0:
			if left == nil || left.Times != 1 {
				t.Errorf("after 1 request the fault is %+v, want Times 1", left)
			}
		default:
			if left != nil {
				t.Errorf("after %d requests the fault is %+v, want cleared", i+1, left)
			}
		}
	}
	if got := h.emu.Stats(); got.FaultsServed != 2 || got.TokensIssued != 1 {
		t.Errorf("stats %+v", got)
	}
}

func TestFaultEndpointMatching(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)

	h.emu.SetFault(&Fault{Endpoint: EndpointInvalidate, Kind: KindStatus})
	if r := h.postForm(pathValidate, validateForm(token)); r.status != 200 {
		t.Errorf("an invalidate fault hit validate: %d", r.status)
	}
	if r := h.postForm(pathInvalidate, invalidateForm(token, testSecret), "X-IMS-ClientId", testClientID); r.status != 503 {
		t.Errorf("invalidate fault missed invalidate: %d", r.status)
	}

	h.emu.SetFault(&Fault{Kind: KindStatus, Status: 500}) // every endpoint
	for _, r := range []response{
		h.postForm(pathToken, tokenForm(testSecret, "openid")),
		h.postForm(pathValidate, validateForm(token)),
		h.mgmt(http.MethodGet, secretsPath, token, testClientID),
	} {
		if r.status != 500 {
			t.Errorf("endpoint-less fault not served: %d %s", r.status, r.body)
		}
	}
	if r := h.do(h.request(http.MethodGet, "/elsewhere", nil)); r.status != 404 {
		t.Errorf("unknown path faulted: %d", r.status)
	}
	h.emu.SetFault(nil)
	if h.emu.Fault() != nil {
		t.Fatal("SetFault(nil) did not clear")
	}
	h.mint(testSecret, "openid")
}

func TestFaultValidate(t *testing.T) {
	bad := []Fault{
		{Kind: "teapot"},
		{Kind: KindStatus, Endpoint: "tokens"},
		{Kind: KindStatus, Status: 1000},
		{Kind: KindStatus, Times: -1},
		{Kind: KindExpiresIn},
		{Kind: KindExpiresIn, ExpiresInRaw: "3600s"},
	}
	for _, f := range bad {
		if err := f.Validate(); err == nil {
			t.Errorf("%+v accepted", f)
		}
	}
	good := []Fault{
		{Kind: KindDrop},
		{Kind: KindHang, Endpoint: EndpointManagement},
		{Kind: KindExpiresIn, ExpiresInRaw: `"3600"`, Times: 3},
	}
	for _, f := range good {
		if err := f.Validate(); err != nil {
			t.Errorf("%+v refused: %v", f, err)
		}
	}
}
