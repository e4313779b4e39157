package imsemu

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
)

func decodeJWTPart(t *testing.T, part string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatalf("JWT part %q is not base64url: %v", part, err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("JWT part %s is not a JSON object: %v", raw, err)
	}
	return m
}

func TestTokenSuccess(t *testing.T) {
	h := newHarness(t)
	r := h.postForm(pathToken, tokenForm(testSecret, fireflyScope))

	if r.status != http.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q", ct)
	}
	body := r.jsonMap(t)
	if len(body) != 3 || body["token_type"] != "bearer" {
		t.Errorf("body %s, want exactly access_token, token_type bearer, expires_in", r.body)
	}
	// expires_in is a JSON number of seconds (v3), not milliseconds and not a string.
	if got, ok := body["expires_in"].(float64); !ok || got != 86399 {
		t.Errorf("expires_in = %#v, want the number 86399", body["expires_in"])
	}

	token := body["access_token"].(string)
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[2] == "" {
		t.Fatalf("token %q is not JWT-shaped", token)
	}
	header := decodeJWTPart(t, parts[0])
	if header["alg"] != "RS256" || header["typ"] != "JWT" || header["kid"] != "ims_na1-key-at-1" || header["x5u"] != "ims_na1-key-at-1.cer" {
		t.Errorf("JWT header %v", header)
	}
	claims := decodeJWTPart(t, parts[1])
	now := h.clock.Now()
	want := map[string]string{
		"type":       "access_token",
		"client_id":  testClientID,
		"scope":      fireflyScope,
		"as":         "ims-na1",
		"created_at": ms(now),
		"expires_in": "86399000", // milliseconds in the token, as Adobe's Node library expects
	}
	for k, v := range want {
		if claims[k] != v {
			t.Errorf("claim %s = %#v, want %q", k, claims[k], v)
		}
	}
	if id, _ := claims["id"].(string); id == "" {
		t.Errorf("claim id missing: %v", claims)
	}

	issued := h.emu.Tokens()
	secrets := h.emu.Secrets()
	if len(issued) != 1 || issued[0].AccessToken != token || issued[0].SecretUUID != secrets[0].UUID ||
		!issued[0].IssuedAt.Equal(now) || !issued[0].ExpiresAt.Equal(now.Add(86399*time.Second)) ||
		strings.Join(issued[0].Scopes, ",") != fireflyScope {
		t.Errorf("recorded %+v, secrets %+v", issued, secrets)
	}
	if !secrets[0].LastUsedAt.Equal(now) {
		t.Errorf("secret last used %v, want %v", secrets[0].LastUsedAt, now)
	}
	if got := h.emu.Stats(); got.TokenRequests != 1 || got.TokensIssued != 1 || got.TokenErrors != 0 || got.CredentialsInQuery != 0 {
		t.Errorf("stats %+v", got)
	}
}

// TestAccessTokenIsShapedLikeAdobes: a header like that of Adobe's access tokens, and the
// payload claims adobe-ims.md names, as JSON strings, times in milliseconds.
func TestAccessTokenIsShapedLikeAdobes(t *testing.T) {
	h := newHarness(t)
	h.emu.SetExpiresIn(time.Hour)
	token := h.mint(testSecret, "openid,AdobeID")
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q is not JWT-shaped", token)
	}
	header, claims := decodeJWTPart(t, parts[0]), decodeJWTPart(t, parts[1])
	tests := []struct {
		part   string
		values map[string]any
		key    string
		want   string
	}{
		{"header", header, "alg", "RS256"},
		{"header", header, "x5u", "ims_na1-key-at-1.cer"},
		{"header", header, "kid", "ims_na1-key-at-1"},
		{"header", header, "typ", "JWT"},
		{"payload", claims, "type", "access_token"},
		{"payload", claims, "client_id", testClientID},
		{"payload", claims, "scope", "openid,AdobeID"},
		{"payload", claims, "as", "ims-na1"},
		{"payload", claims, "created_at", ms(h.clock.Now())},
		{"payload", claims, "expires_in", "3600000"},
	}
	for _, tc := range tests {
		if got, ok := tc.values[tc.key].(string); !ok || got != tc.want {
			t.Errorf("%s %s = %#v, want the string %q", tc.part, tc.key, tc.values[tc.key], tc.want)
		}
	}
	if len(header) != 4 {
		t.Errorf("header %v, want exactly alg, x5u, kid, typ", header)
	}
	for k, v := range claims {
		if _, ok := v.(string); !ok {
			t.Errorf("claim %s = %#v, want a string", k, v)
		}
	}
	// Adobe's Node library: expiry = created_at + expires_in, in milliseconds.
	created, _ := strconv.ParseInt(claims["created_at"].(string), 10, 64)
	lifetime, _ := strconv.ParseInt(claims["expires_in"].(string), 10, 64)
	if got, want := created+lifetime, h.emu.Tokens()[0].ExpiresAt.UnixMilli(); got != want {
		t.Errorf("created_at + expires_in = %d, want the recorded expiry %d", got, want)
	}
	// The signature is random bytes: nothing can verify it, as with IMS's own tokens.
	if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil || len(sig) != 256 {
		t.Errorf("signature: %d bytes, %v", len(sig), err)
	}
}

func TestNewTokenLeavesEarlierValid(t *testing.T) {
	h := newHarness(t)
	first := h.mint(testSecret, "openid")
	second := h.mint(testSecret, "openid")
	if first == second {
		t.Fatal("two requests got the same token")
	}
	if !h.emu.TokenValid(first) || !h.emu.TokenValid(second) {
		t.Error("issuing a token invalidated an earlier one")
	}
}

func TestTokenExpiresWithTheClock(t *testing.T) {
	h := newHarness(t)
	h.emu.SetExpiresIn(time.Hour)
	r := h.postForm(pathToken, tokenForm(testSecret, "openid"))
	body := r.jsonMap(t)
	if body["expires_in"] != float64(3600) {
		t.Errorf("expires_in = %v, want 3600", body["expires_in"])
	}
	token := body["access_token"].(string)
	h.clock.Advance(time.Hour - time.Millisecond)
	if !h.emu.TokenValid(token) {
		t.Error("token invalid before its expiry")
	}
	h.clock.Advance(time.Millisecond)
	if h.emu.TokenValid(token) {
		t.Error("token valid at its expiry")
	}
	if h.emu.TokenValid("not-a-token") {
		t.Error("unknown token valid")
	}
}

func TestTokenRefusals(t *testing.T) {
	tests := []struct {
		name   string
		method string
		edit   func(url.Values)
		status int
		code   string
		desc   string // checked when Adobe documents it
	}{
		{name: "wrong secret", edit: func(f url.Values) { f.Set("client_secret", "nope") },
			status: 400, code: "invalid_client", desc: "invalid client_secret parameter"},
		{name: "unknown client", edit: func(f url.Values) { f.Set("client_id", "someone-else") },
			status: 400, code: "invalid_client"},
		{name: "scope not granted", edit: func(f url.Values) { f.Set("scope", "openid,creative_sdk") },
			status: 400, code: "invalid_scope"},
		{name: "space separated scopes", edit: func(f url.Values) { f.Set("scope", "openid AdobeID") },
			status: 400, code: "invalid_scope"},
		{name: "empty scope item", edit: func(f url.Values) { f.Set("scope", "openid,") },
			status: 400, code: "invalid_scope"},
		{name: "repeated scope parameter", edit: func(f url.Values) { f["scope"] = []string{"openid", "AdobeID"} },
			status: 400, code: "invalid_request"},
		{name: "missing scope", edit: func(f url.Values) { f.Del("scope") }, status: 400, code: "invalid_request"},
		{name: "missing grant_type", edit: func(f url.Values) { f.Del("grant_type") }, status: 400, code: "invalid_request"},
		{name: "other grant_type", edit: func(f url.Values) { f.Set("grant_type", "password") },
			status: 400, code: "unsupported_grant_type"},
		{name: "missing client_id", edit: func(f url.Values) { f.Del("client_id") }, status: 400, code: "invalid_request"},
		{name: "missing client_secret", edit: func(f url.Values) { f.Del("client_secret") }, status: 400, code: "invalid_request"},
		{name: "GET", method: http.MethodGet, edit: func(url.Values) {}, status: 405, code: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			form := tokenForm(testSecret, "openid,AdobeID")
			tc.edit(form)
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			req := h.request(method, pathToken, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			r := h.do(req)
			body := r.jsonMap(t)
			if r.status != tc.status || body["error"] != tc.code {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tc.status, tc.code)
			}
			if d, _ := body["error_description"].(string); d == "" || (tc.desc != "" && d != tc.desc) {
				t.Errorf("error_description %q, want %q", d, tc.desc)
			}
			if got := h.emu.Stats(); got.TokenErrors != 1 || got.TokensIssued != 0 || len(h.emu.Tokens()) != 0 {
				t.Errorf("stats %+v", got)
			}
		})
	}
}

func TestTokenJSONBodyIsNotAForm(t *testing.T) {
	h := newHarness(t)
	req := h.request(http.MethodPost, pathToken, strings.NewReader(`{"grant_type":"client_credentials"}`))
	req.Header.Set("Content-Type", "application/json")
	if r := h.do(req); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] != "invalid_request" {
		t.Errorf("got %d %s, want 400 invalid_request", r.status, r.body)
	}
}

func TestCredentialsInQueryAreAcceptedAndCounted(t *testing.T) {
	h := newHarness(t)
	req := h.request(http.MethodPost, pathToken+"?"+tokenForm(testSecret, "openid").Encode(), nil)
	if r := h.do(req); r.status != http.StatusOK {
		t.Fatalf("query parameters refused: %d %s", r.status, r.body)
	}
	if got := h.emu.Stats().CredentialsInQuery; got != 1 {
		t.Errorf("CredentialsInQuery = %d after a query request, want 1", got)
	}
	h.mint(testSecret, "openid")
	inv := url.Values{"token_type": {"access_token"}, "token": {"x"}, "client_secret": {testSecret}}
	req = h.request(http.MethodPost, pathInvalidate+"?client_id="+testClientID, strings.NewReader(inv.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-IMS-ClientId", testClientID)
	if r := h.do(req); r.status != http.StatusOK {
		t.Fatalf("invalidate: %d %s", r.status, r.body)
	}
	if got := h.emu.Stats().CredentialsInQuery; got != 2 {
		t.Errorf("CredentialsInQuery = %d, want 2 (token body request not counted, invalidate counted)", got)
	}
}

func invalidateForm(token, secret string) url.Values {
	return url.Values{
		"token_type":    {"access_token"},
		"token":         {token},
		"client_id":     {testClientID},
		"client_secret": {secret},
	}
}

func TestInvalidate(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, "openid")
	other := h.mint(testSecret, "openid")

	for i := range 2 { // the second time, the token is already invalid: still 200
		r := h.postForm(pathInvalidate, invalidateForm(token, testSecret), "X-IMS-ClientId", testClientID)
		if r.status != http.StatusOK || len(r.body) != 0 {
			t.Errorf("invalidate #%d: %d %q, want 200 with an empty body", i+1, r.status, r.body)
		}
	}
	if h.emu.TokenValid(token) {
		t.Error("token still valid after invalidate")
	}
	if !h.emu.TokenValid(other) {
		t.Error("invalidate ended another token")
	}
	if got := h.emu.Tokens()[0]; !got.Invalidated {
		t.Errorf("Tokens()[0] = %+v, want Invalidated", got)
	}
	if got := h.emu.Stats(); got.InvalidateRequests != 2 || got.Invalidated != 1 {
		t.Errorf("stats %+v, want 2 requests and 1 invalidated", got)
	}
}

func TestInvalidateUnknownOrExpiredTokenSucceeds(t *testing.T) {
	h := newHarness(t)
	expired := h.mint(testSecret, "openid")
	h.clock.Advance(DefaultExpiresIn)
	for _, token := range []string{"never-issued", expired} {
		form := invalidateForm(token, testSecret)
		form.Set("cascading", "all")
		if r := h.postForm(pathInvalidate, form, "X-IMS-ClientId", testClientID); r.status != http.StatusOK || len(r.body) != 0 {
			t.Errorf("invalidate %q: %d %q, want 200 empty", token, r.status, r.body)
		}
	}
	if got := h.emu.Stats().Invalidated; got != 0 {
		t.Errorf("Invalidated = %d, want 0: nothing live was ended", got)
	}
}

// TestInvalidateAcceptsWhatAdobeLibrariesSend: adobe-ims.md says Adobe's Go client sends
// X-IMS-ClientId and sends client_secret only for service tokens, Adobe's Node library
// omits the header, and an emulator must require neither.
func TestInvalidateAcceptsWhatAdobeLibrariesSend(t *testing.T) {
	tests := []struct {
		name              string
		header            bool
		edit              func(url.Values)
		invalidatedBefore bool
	}{
		{name: "header and secret", header: true, edit: func(url.Values) {}},
		{name: "no X-IMS-ClientId (Node library)", edit: func(url.Values) {}},
		{name: "no client_secret (Go client, access token)", header: true, edit: func(f url.Values) { f.Del("client_secret") }},
		{name: "neither", edit: func(f url.Values) { f.Del("client_secret") }},
		{name: "empty client_secret", edit: func(f url.Values) { f.Set("client_secret", "") }},
		{name: "cascading=all", edit: func(f url.Values) { f.Set("cascading", "all") }},
		{name: "already invalidated, neither", edit: func(f url.Values) { f.Del("client_secret") }, invalidatedBefore: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			token := h.mint(testSecret, "openid")
			other := h.mint(testSecret, "openid")
			if tc.invalidatedBefore {
				h.postForm(pathInvalidate, invalidateForm(token, testSecret))
			}
			form := invalidateForm(token, testSecret)
			tc.edit(form)
			var headers []string
			if tc.header {
				headers = []string{"X-IMS-ClientId", testClientID}
			}
			if r := h.postForm(pathInvalidate, form, headers...); r.status != http.StatusOK || len(r.body) != 0 {
				t.Fatalf("got %d %q, want 200 with an empty body", r.status, r.body)
			}
			if h.emu.TokenValid(token) || !h.emu.TokenValid(other) {
				t.Errorf("token valid %v, other token valid %v: want false, true", h.emu.TokenValid(token), h.emu.TokenValid(other))
			}
			if got := h.emu.Stats().Invalidated; got != 1 {
				t.Errorf("Invalidated = %d, want 1", got)
			}
		})
	}
}

func TestInvalidateRefusals(t *testing.T) {
	tests := []struct {
		name   string
		header string
		edit   func(url.Values)
		code   string
		desc   string
	}{
		{name: "mismatched X-IMS-ClientId", header: "someone-else", edit: func(url.Values) {}, code: "invalid_request"},
		{name: "missing client_id", header: testClientID, edit: func(f url.Values) { f.Del("client_id") }, code: "invalid_request"},
		{name: "wrong secret", header: testClientID, edit: func(f url.Values) { f.Set("client_secret", "nope") },
			code: "invalid_client", desc: "invalid client_secret parameter"},
		{name: "wrong secret without X-IMS-ClientId", edit: func(f url.Values) { f.Set("client_secret", "nope") },
			code: "invalid_client", desc: "invalid client_secret parameter"},
		{name: "unknown client without X-IMS-ClientId", edit: func(f url.Values) { f.Set("client_id", "someone-else") },
			code: "invalid_client"},
		{name: "unknown client", header: "someone-else", edit: func(f url.Values) { f.Set("client_id", "someone-else") },
			code: "invalid_client"},
		{name: "missing token_type", header: testClientID, edit: func(f url.Values) { f.Del("token_type") }, code: "invalid_request"},
		{name: "missing token", header: testClientID, edit: func(f url.Values) { f.Del("token") }, code: "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			token := h.mint(testSecret, "openid")
			form := invalidateForm(token, testSecret)
			tc.edit(form)
			var headers []string
			if tc.header != "" {
				headers = []string{"X-IMS-ClientId", tc.header}
			}
			r := h.postForm(pathInvalidate, form, headers...)
			body := r.jsonMap(t)
			if r.status != http.StatusBadRequest || body["error"] != tc.code {
				t.Errorf("got %d %s, want 400 %s", r.status, r.body, tc.code)
			}
			if tc.desc != "" && body["error_description"] != tc.desc {
				t.Errorf("error_description %v, want %q", body["error_description"], tc.desc)
			}
			if !h.emu.TokenValid(token) {
				t.Error("a refused invalidate ended the token")
			}
		})
	}
}

func validateForm(token string) url.Values {
	return url.Values{"type": {"access_token"}, "client_id": {testClientID}, "token": {token}}
}

func TestValidate(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, "openid,AdobeID")

	r := h.postForm(pathValidate, validateForm(token))
	body := r.jsonMap(t)
	wantExpiry := float64(h.clock.Now().Add(DefaultExpiresIn).UnixMilli())
	if r.status != http.StatusOK || body["valid"] != true || body["expires_at"] != wantExpiry {
		t.Errorf("valid token: %d %s, want valid with expires_at %v", r.status, r.body, wantExpiry)
	}
	claims, _ := body["token"].(map[string]any)
	if claims["client_id"] != testClientID || claims["scope"] != "openid,AdobeID" || claims["type"] != "access_token" {
		t.Errorf("token claims %v", claims)
	}

	expired := h.mint(testSecret, "openid")
	invalidated := h.mint(testSecret, "openid")
	h.postForm(pathInvalidate, invalidateForm(invalidated, testSecret), "X-IMS-ClientId", testClientID)
	h.clock.Advance(DefaultExpiresIn)
	for name, tok := range map[string]string{"unknown": "nope", "expired": expired, "invalidated": invalidated} {
		r := h.postForm(pathValidate, validateForm(tok))
		if r.status != http.StatusOK || string(r.body) != `{"valid":false}` {
			t.Errorf("%s token: %d %s, want 200 {\"valid\":false}", name, r.status, r.body)
		}
	}
	if got := h.emu.Stats().ValidateRequests; got != 4 {
		t.Errorf("ValidateRequests = %d, want 4", got)
	}
}

func TestValidateRefusals(t *testing.T) {
	tests := []struct {
		name string
		edit func(url.Values)
		code string
	}{
		{"unknown client", func(f url.Values) { f.Set("client_id", "someone-else") }, "invalid_client"},
		{"missing type", func(f url.Values) { f.Del("type") }, "invalid_request"},
		{"missing token", func(f url.Values) { f.Del("token") }, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			form := validateForm(h.mint(testSecret, "openid"))
			tc.edit(form)
			r := h.postForm(pathValidate, form)
			if r.status != http.StatusBadRequest || r.jsonMap(t)["error"] != tc.code {
				t.Errorf("got %d %s, want 400 %s", r.status, r.body, tc.code)
			}
		})
	}
}
