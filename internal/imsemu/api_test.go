package imsemu

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

const goodPrompt = `{"prompt":"a lighthouse at dusk"}`

// api calls the Adobe API stand-in. authorization and apiKey are sent verbatim when
// non-empty ("Bearer " is not added, so tests can garble it).
func (h *harness) api(method, authorization, apiKey, body string) response {
	h.t.Helper()
	req := h.request(method, APIPath, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	if apiKey != "" {
		req.Header.Set("x-api-key", apiKey)
	}
	return h.do(req)
}

// issued returns what Tokens() says about token.
func (h *harness) issued(token string) IssuedToken {
	h.t.Helper()
	for _, it := range h.emu.Tokens() {
		if it.AccessToken == token {
			return it
		}
	}
	h.t.Fatalf("token not in Tokens()")
	return IssuedToken{}
}

func TestAPIAcceptsAGoodCall(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, fireflyScope)
	other := h.mint(testSecret, fireflyScope)
	h.clock.Advance(time.Minute)

	r := h.api(http.MethodPost, "Bearer "+token, testClientID,
		`{"prompt":"a lighthouse at dusk","size":{"width":1024,"height":768},"contentClass":"art","numVariations":1}`)
	if r.status != http.StatusOK {
		t.Fatalf("good call: %d %s", r.status, r.body)
	}
	var got generateResponse
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatalf("body %s: %v", r.body, err)
	}
	if got.Size != (imageSize{1024, 768}) || got.ContentClass != "art" || len(got.Outputs) != 1 ||
		!strings.HasPrefix(got.Outputs[0].Image.URL, "https://") || !strings.Contains(got.Outputs[0].Image.URL, ".invalid/") {
		t.Errorf("body %s", r.body)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
		t.Errorf("Content-Type %q", r.header.Get("Content-Type"))
	}

	// Defaults when the request asks for nothing but a prompt; scheme case does not matter.
	r = h.api(http.MethodPost, "bearer "+token, testClientID, goodPrompt)
	body := r.jsonMap(t)
	size, _ := body["size"].(map[string]any)
	outputs, _ := body["outputs"].([]any)
	if r.status != http.StatusOK || size["width"] != 2048.0 || size["height"] != 2048.0 ||
		body["contentClass"] != "photo" || len(outputs) != 1 {
		t.Errorf("prompt-only call: %d %s", r.status, r.body)
	}

	// The call is recorded against the token that made it, and only that one.
	it := h.issued(token)
	if it.APICalls != 2 || !it.LastAPICallAt.Equal(h.clock.Now()) {
		t.Errorf("calling token: APICalls %d LastAPICallAt %v, want 2 at %v", it.APICalls, it.LastAPICallAt, h.clock.Now())
	}
	if it := h.issued(other); it.APICalls != 0 || !it.LastAPICallAt.IsZero() {
		t.Errorf("idle token: %+v", it)
	}
	if s := h.emu.Stats(); s.APIRequests != 2 || s.APIAccepted != 2 || s.APIRejections != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestAPIRefusals(t *testing.T) {
	h := newHarness(t)
	good := h.mint(testSecret, fireflyScope)
	noFirefly := h.mint(testSecret, mgmtScope)
	invalidated := h.mint(testSecret, fireflyScope)
	if r := h.postForm(pathInvalidate, invalidateForm(invalidated, testSecret), "X-IMS-ClientId", testClientID); r.status != 200 {
		t.Fatalf("invalidate: %d %s", r.status, r.body)
	}
	h.emu.SetExpiresIn(time.Hour)
	expiring := h.mint(testSecret, fireflyScope)
	h.clock.Advance(time.Hour) // exactly its lifetime: expired; the others live a day
	if h.emu.TokenValid(expiring) || !h.emu.TokenValid(good) {
		t.Fatal("clock set-up: want the one-hour token expired and the others live")
	}

	const (
		tokenInvalid = `{"error_code":"401013","message":"Oauth token is not valid"}`
		apiKeyBad    = `{"error_code":"403003","message":"Api Key is invalid"}`
	)
	tests := []struct {
		name, method, auth, apiKey, body string
		status                           int
		code                             string
		exact                            string // the documented body, when there is one
	}{
		{"no Authorization", "POST", "", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"Bearer without token", "POST", "Bearer ", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"Bearer only", "POST", "Bearer", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"Basic scheme", "POST", "Basic " + good, testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"token without scheme", "POST", good, testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"garbled token", "POST", "Bearer " + good[:len(good)-4] + "!!!!", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"token with trailing junk", "POST", "Bearer " + good + " x", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"unknown token", "POST", "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln", testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"expired token", "POST", "Bearer " + expiring, testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"invalidated token", "POST", "Bearer " + invalidated, testClientID, goodPrompt, 401, APIErrorTokenInvalid, tokenInvalid},
		{"bad token beats bad key", "POST", "Bearer bogus", "", "{", 401, APIErrorTokenInvalid, tokenInvalid},
		{"no x-api-key", "POST", "Bearer " + good, "", goodPrompt, 403, APIErrorAPIKeyInvalid, apiKeyBad},
		{"wrong x-api-key", "POST", "Bearer " + good, "someone-else", goodPrompt, 403, APIErrorAPIKeyInvalid, apiKeyBad},
		{"x-api-key in other case", "POST", "Bearer " + good, strings.ToUpper(testClientID), goodPrompt, 403, APIErrorAPIKeyInvalid, apiKeyBad},
		{"token without firefly_api", "POST", "Bearer " + noFirefly, testClientID, goodPrompt, 403, APIErrorNotEntitled, ""},
		{"empty body", "POST", "Bearer " + good, testClientID, "", 400, APIErrorValidation, ""},
		{"not JSON", "POST", "Bearer " + good, testClientID, "prompt=a+cat", 400, APIErrorValidation, ""},
		{"truncated JSON", "POST", "Bearer " + good, testClientID, `{"prompt":"a cat"`, 400, APIErrorValidation, ""},
		{"two JSON values", "POST", "Bearer " + good, testClientID, goodPrompt + goodPrompt, 400, APIErrorValidation, ""},
		{"JSON null", "POST", "Bearer " + good, testClientID, "null", 400, APIErrorValidation, ""},
		{"JSON array", "POST", "Bearer " + good, testClientID, `["a cat"]`, 400, APIErrorValidation, ""},
		{"no prompt", "POST", "Bearer " + good, testClientID, `{"size":{"width":1,"height":1}}`, 400, APIErrorValidation, ""},
		{"empty prompt", "POST", "Bearer " + good, testClientID, `{"prompt":""}`, 400, APIErrorValidation, ""},
		{"blank prompt", "POST", "Bearer " + good, testClientID, `{"prompt":"  "}`, 400, APIErrorValidation, ""},
		{"prompt not a string", "POST", "Bearer " + good, testClientID, `{"prompt":42}`, 400, APIErrorValidation, ""},
		{"GET", "GET", "Bearer " + good, testClientID, "", 405, APIErrorMethod, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.emu.Stats()
			r := h.api(tc.method, tc.auth, tc.apiKey, tc.body)
			body := r.jsonMap(t)
			if r.status != tc.status || body["error_code"] != tc.code || !nonEmpty(body, "message") || len(body) != 2 {
				t.Errorf("got %d %s, want %d with error_code %q and a message", r.status, r.body, tc.status, tc.code)
			}
			if tc.exact != "" && string(r.body) != tc.exact {
				t.Errorf("body %s, want exactly %s", r.body, tc.exact)
			}
			after := h.emu.Stats()
			if after.APIRequests != before.APIRequests+1 || after.APIRejections != before.APIRejections+1 || after.APIAccepted != before.APIAccepted {
				t.Errorf("stats went from %+v to %+v, want one more request and rejection", before, after)
			}
		})
	}
	if r := h.api(http.MethodGet, "Bearer "+good, testClientID, ""); r.header.Get("Allow") != http.MethodPost {
		t.Errorf("405 Allow %q, want POST", r.header.Get("Allow"))
	}
	for _, tok := range []string{good, noFirefly, invalidated, expiring} {
		if it := h.issued(tok); it.APICalls != 0 {
			t.Errorf("a refused call was recorded against a token: %+v", it)
		}
	}
	// The same good token and key do work: the refusals above are down to what each case changed.
	if r := h.api(http.MethodPost, "Bearer "+good, testClientID, goodPrompt); r.status != http.StatusOK {
		t.Errorf("control call: %d %s", r.status, r.body)
	}
}

func TestAPITokenExpiresWithTheClock(t *testing.T) {
	h := newHarness(t)
	h.emu.SetExpiresIn(10 * time.Minute)
	token := h.mint(testSecret, fireflyScope)
	h.clock.Advance(10*time.Minute - time.Millisecond)
	if r := h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt); r.status != http.StatusOK {
		t.Fatalf("just before expiry: %d %s", r.status, r.body)
	}
	h.clock.Advance(time.Millisecond)
	if r := h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt); r.status != http.StatusUnauthorized {
		t.Errorf("at expiry: %d %s, want 401", r.status, r.body)
	}
	if h.emu.TokenValid(token) {
		t.Error("TokenValid disagrees with the API stand-in")
	}
	if s := h.emu.Stats(); s.APIRequests != 2 || s.APIAccepted != 1 || s.APIRejections != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestAPIStopsAcceptingAnInvalidatedToken(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, fireflyScope)
	if r := h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt); r.status != http.StatusOK {
		t.Fatalf("before invalidation: %d %s", r.status, r.body)
	}
	h.postForm(pathInvalidate, invalidateForm(token, testSecret), "X-IMS-ClientId", testClientID)
	if r := h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt); r.status != http.StatusUnauthorized {
		t.Errorf("after invalidation: %d %s, want 401", r.status, r.body)
	}
}

func TestAPIFaults(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, fireflyScope)
	call := func() response { return h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt) }

	// An endpoint-less fault breaks IMS but not the API stand-in, which plays another host.
	h.emu.SetFault(&Fault{Kind: KindStatus, Status: 503})
	if r := call(); r.status != http.StatusOK {
		t.Errorf("EndpointAll fault reached the API stand-in: %d %s", r.status, r.body)
	}
	if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.status != 503 {
		t.Errorf("EndpointAll fault missed the token endpoint: %d", r.status)
	}

	// EndpointAPI faults the stand-in only, in the gateway's error shape.
	h.emu.SetFault(&Fault{Endpoint: EndpointAPI, Kind: KindStatus, Status: 429, RetryAfter: "3", Times: 1})
	if r := h.mint(testSecret, "openid"); r == "" {
		t.Error("API fault hit the token endpoint")
	}
	r := call()
	if body := r.jsonMap(t); r.status != 429 || body["error_code"] != "temporarily_unavailable" || !nonEmpty(body, "message") ||
		r.header.Get("Retry-After") != "3" {
		t.Errorf("API fault: %d %s Retry-After %q", r.status, r.body, r.header.Get("Retry-After"))
	}
	h.emu.SetFault(&Fault{Endpoint: EndpointAPI, Kind: KindMalformedJSON, Times: 1})
	if r := call(); r.status != 200 || json.Valid(r.body) || !strings.Contains(string(r.body), `"outputs"`) {
		t.Errorf("malformed_json on API: %d %s", r.status, r.body)
	}
	if r := call(); r.status != http.StatusOK {
		t.Errorf("after the faults ran out: %d %s", r.status, r.body)
	}
	if s := h.emu.Stats(); s.APIRequests != 4 || s.APIAccepted != 2 || s.APIRejections != 0 || s.FaultsServed != 3 {
		t.Errorf("stats %+v, want 4 API requests, 2 accepted, 0 rejected, 3 faults (1 token + 2 API)", s)
	}
	if it := h.issued(token); it.APICalls != 2 {
		t.Errorf("APICalls %d, want 2: faulted calls are not the token's", it.APICalls)
	}

	for _, kind := range []string{KindNoAccessToken, KindExpiresIn} {
		f := Fault{Endpoint: EndpointAPI, Kind: kind, ExpiresInRaw: "0"}
		if err := f.Validate(); err == nil {
			t.Errorf("%s accepted on endpoint api", kind)
		}
	}
	for _, kind := range []string{KindStatus, KindHang, KindDrop, KindHTML, KindMalformedJSON} {
		f := Fault{Endpoint: EndpointAPI, Kind: kind}
		if err := f.Validate(); err != nil {
			t.Errorf("%s refused on endpoint api: %v", kind, err)
		}
	}
}

func TestAPIStatsReachTheControlAPI(t *testing.T) {
	h, ctl := newControl(t)
	token := h.mint(testSecret, fireflyScope)
	h.api(http.MethodPost, "Bearer "+token, testClientID, goodPrompt)
	h.api(http.MethodPost, "Bearer "+token, "", goodPrompt)
	if status, body := control(t, ctl, "GET", "/stats", ""); status != 200 ||
		!strings.Contains(body, `"api_requests":2`) || !strings.Contains(body, `"api_accepted":1`) || !strings.Contains(body, `"api_rejections":1`) {
		t.Errorf("GET /stats: %d %s", status, body)
	}
	if status, body := control(t, ctl, "GET", "/tokens", ""); status != 200 ||
		!strings.Contains(body, `"api_calls":1`) || !strings.Contains(body, `"last_api_call_at":"2025-03-01T12:00:00Z"`) {
		t.Errorf("GET /tokens: %d %s", status, body)
	}
	h.emu.ResetStats()
	if s := h.emu.Stats(); s != (Stats{}) {
		t.Errorf("after reset %+v", s)
	}
}
