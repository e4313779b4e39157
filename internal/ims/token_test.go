package ims

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTokenRequestEncoding(t *testing.T) {
	var got struct {
		method, path, query, auth, contentType string
		form                                   url.Values
	}
	s := &script{replies: []reply{tokenReply("86399")}, check: func(r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got.method, got.path, got.query = r.Method, r.URL.Path, r.URL.RawQuery
		got.auth, got.contentType = r.Header.Get("Authorization"), r.Header.Get("Content-Type")
		got.form, _ = url.ParseQuery(string(body))
	}}
	srv := newServer(t, s)

	_, err := NewClient(srv.URL, testCreds, Options{}).Token(context.Background(), []string{"openid", "AdobeID", "firefly_api"})
	if err != nil {
		t.Fatal(err)
	}
	if got.method != http.MethodPost || got.path != "/ims/token/v3" {
		t.Errorf("request = %s %s, want POST /ims/token/v3", got.method, got.path)
	}
	if got.query != "" {
		t.Errorf("query string = %q, want none", got.query)
	}
	if got.auth != "" {
		t.Errorf("Authorization = %q, want none (credentials go in the body)", got.auth)
	}
	if got.contentType != "application/x-www-form-urlencoded" {
		t.Errorf("Content-Type = %q", got.contentType)
	}
	want := url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {testClientID},
		"client_secret": {testSecret},
		"scope":         {"openid,AdobeID,firefly_api"},
	}
	if !reflect.DeepEqual(got.form, want) {
		t.Errorf("form = %v, want %v", got.form, want)
	}
}

func TestTokenSuccess(t *testing.T) {
	tests := []struct {
		name, body, wantType string
	}{
		{"bearer", `{"access_token":"` + testToken + `","token_type":"bearer","expires_in":86399}`, "bearer"},
		{"type kept as sent", `{"access_token":"` + testToken + `","token_type":"Bearer","expires_in":86399}`, "Bearer"},
		{"missing type means bearer", `{"access_token":"` + testToken + `","expires_in":86399}`, "bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, &script{replies: []reply{jsonReply(200, tt.body).with("x-debug-id", "dbg-ok")}})
			scopes := []string{"openid", "AdobeID"}
			tok, err := NewClient(srv.URL, testCreds, Options{}).Token(context.Background(), scopes)
			if err != nil {
				t.Fatal(err)
			}
			want := &Token{AccessToken: testToken, TokenType: tt.wantType, ExpiresIn: 86399 * time.Second, Scopes: scopes, DebugID: "dbg-ok"}
			if !reflect.DeepEqual(tok, want) {
				t.Errorf("token = %+v, want %+v", tok, want)
			}
			scopes[0] = "changed"
			if tok.Scopes[0] != "openid" {
				t.Error("Token.Scopes shares the caller's slice")
			}
		})
	}
}

func TestTokenUnusableResponse(t *testing.T) {
	tests := []struct {
		name    string
		reply   reply
		wantErr string
	}{
		{"expires_in missing", jsonReply(200, `{"access_token":"`+testToken+`","token_type":"bearer"}`), "no expires_in"},
		{"expires_in zero", tokenReply("0"), "expires_in 0 is not a positive"},
		{"expires_in negative", tokenReply("-5"), "expires_in -5 is not a positive"},
		{"expires_in string", tokenReply(`"3600"`), "expires_in is a JSON string"},
		{"expires_in boolean", tokenReply(`true`), "expires_in is a JSON boolean"},
		{"expires_in absurd", tokenReply("1e12"), "absurd"},
		{"expires_in milliseconds", tokenReply("86399999"), "absurd"},
		{"expires_in fractional", tokenReply("3600.5"), "not a whole number"},
		{"access_token missing", jsonReply(200, `{"token_type":"bearer","expires_in":86399}`), "no access_token"},
		{"malformed JSON", jsonReply(200, `{"access_token":"`+testToken+`","expires_in":`), "a body of type application/json, not a JSON token response"},
		{"HTML page", reply{status: 200, header: map[string]string{"Content-Type": "text/html"}, body: "<html>" + testToken + "</html>"}, "an HTML page (text/html)"},
		{"form body", reply{status: 200, header: map[string]string{"Content-Type": "text/plain"}, body: "access_token=" + testToken + "&expires_in=3600"}, "a body of type text/plain, not JSON"},
		{"empty body", reply{status: 200}, "not a JSON token response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			srv := newServer(t, &script{replies: []reply{tt.reply}})
			_, err := NewClient(srv.URL, testCreds, fastOptions(rec)).Token(context.Background(), []string{"openid"})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %q, want it to contain %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), testToken) {
				t.Errorf("err quotes the access token: %q", err)
			}
			if e.StatusCode != 200 || e.DebugID != "dbg-1" || e.Retryable() || len(rec.all()) != 1 {
				t.Errorf("status %d, debug id %q, retryable %v, attempts %d; want 200, dbg-1, false, 1",
					e.StatusCode, e.DebugID, e.Retryable(), len(rec.all()))
			}
		})
	}
}

func TestTokenRefused(t *testing.T) {
	tests := []struct {
		name                  string
		reply                 reply
		wantCode, wantDesc    string
		wantHint, wantErrText string
	}{{
		name:     "invalid_client",
		reply:    jsonReply(400, `{"error":"invalid_client","error_description":"invalid client_secret parameter"}`).with("x-debug-id", "4ae1"),
		wantCode: "invalid_client", wantDesc: "invalid client_secret parameter",
		wantHint:    "check client_id and client_secret",
		wantErrText: "adobe ims token request: HTTP 400 invalid_client: invalid client_secret parameter (x-debug-id 4ae1): check client_id and client_secret in the plugin config",
	}, {
		name:     "invalid_scope",
		reply:    jsonReply(400, `{"error":"invalid_scope","error_description":"invalid scope"}`).with("x-debug-id", "4ae1"),
		wantCode: "invalid_scope", wantDesc: "invalid scope",
		wantHint:    "scopes that the Adobe Developer Console shows",
		wantErrText: "adobe ims token request: HTTP 400 invalid_scope: invalid scope (x-debug-id 4ae1): request only scopes",
	}, {
		name:        "HTML 404",
		reply:       reply{status: 404, header: map[string]string{"Content-Type": "text/html", "x-debug-id": "4ae1"}, body: "<html>not found</html>"},
		wantHint:    "give the x-debug-id to Adobe support",
		wantErrText: "adobe ims token request: HTTP 404: unexpected response: an HTML page (text/html) (x-debug-id 4ae1)",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			srv := newServer(t, &script{replies: []reply{tt.reply}})
			_, err := NewClient(srv.URL, testCreds, fastOptions(rec)).Token(context.Background(), []string{"openid"})
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Op != OpToken || e.Code != tt.wantCode || e.Description != tt.wantDesc || e.DebugID != "4ae1" {
				t.Errorf("error fields = %+v", e)
			}
			if !strings.Contains(e.Hint, tt.wantHint) {
				t.Errorf("hint = %q, want it to contain %q", e.Hint, tt.wantHint)
			}
			if !strings.HasPrefix(err.Error(), tt.wantErrText) {
				t.Errorf("err =\n%q, want it to start with\n%q", err, tt.wantErrText)
			}
			if n := len(rec.all()); n != 1 || e.Retryable() {
				t.Errorf("%d attempts, retryable %v; want 1, false", n, e.Retryable())
			}
		})
	}
}

func TestTokenRetries(t *testing.T) {
	tests := []struct {
		name         string
		replies      []reply
		retryMax     int
		wantAttempts int
		wantStatus   int // 0: success
		minElapsed   time.Duration
	}{
		{"429 honours Retry-After", []reply{jsonReply(429, `{}`).with("Retry-After", "1"), tokenReply("60")}, 0, 2, 0, 950 * time.Millisecond},
		{"503 then success", []reply{jsonReply(503, `{}`), tokenReply("60")}, 0, 2, 0, 0},
		{"503 with Retry-After 0", []reply{jsonReply(503, `{}`).with("Retry-After", "0"), tokenReply("60")}, 0, 2, 0, 0},
		{"502, 504, then success", []reply{jsonReply(502, `{}`), jsonReply(504, `{}`), tokenReply("60")}, 0, 3, 0, 0},
		{"502 honours Retry-After", []reply{jsonReply(502, `{}`).with("Retry-After", "1"), tokenReply("60")}, 0, 2, 0, 950 * time.Millisecond},
		{"500 until giving up", []reply{jsonReply(500, `{"error":"server_error"}`)}, 2, 3, 500, 0},
		{"no retries", []reply{jsonReply(500, `{}`)}, -1, 1, 500, 0},
		{"501 is not retried", []reply{jsonReply(501, `{}`)}, 0, 1, 501, 0},
		{"403 is not retried", []reply{jsonReply(403, `{}`)}, 0, 1, 403, 0},
		{"redirect is not followed", []reply{{status: 302, header: map[string]string{"Location": "/elsewhere"}}}, 0, 1, 302, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{}
			s := &script{replies: tt.replies}
			srv := newServer(t, s)
			opts := fastOptions(rec)
			opts.RetryMax = tt.retryMax
			start := time.Now()
			tok, err := NewClient(srv.URL, testCreds, opts).Token(context.Background(), []string{"openid"})
			elapsed := time.Since(start)

			if got := int(s.hits.Load()); got != tt.wantAttempts || len(rec.all()) != tt.wantAttempts {
				t.Errorf("server saw %d requests, OnAttempt %d; want %d", got, len(rec.all()), tt.wantAttempts)
			}
			if elapsed < tt.minElapsed {
				t.Errorf("took %s, want at least %s", elapsed, tt.minElapsed)
			}
			if tt.wantStatus == 0 {
				if err != nil || tok.AccessToken != testToken {
					t.Fatalf("Token() = %v, %v; want success", tok, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tt.wantStatus || e.Attempts != tt.wantAttempts {
				t.Fatalf("err = %v, want *Error with HTTP %d after %d attempts", err, tt.wantStatus, tt.wantAttempts)
			}
		})
	}
}

func TestTokenOnAttempt(t *testing.T) {
	rec := &recorder{}
	srv := newServer(t, &script{replies: []reply{jsonReply(503, `{}`), tokenReply("60")}})
	if _, err := NewClient(srv.URL, testCreds, fastOptions(rec)).Token(context.Background(), []string{"openid"}); err != nil {
		t.Fatal(err)
	}
	got := rec.all()
	if len(got) != 2 {
		t.Fatalf("%d attempts reported, want 2", len(got))
	}
	for i, want := range []Attempt{
		{Op: OpToken, Number: 1, Status: 503, DebugID: "dbg-1", Retrying: true},
		{Op: OpToken, Number: 2, Status: 200, DebugID: "dbg-2", Retrying: false},
	} {
		a := got[i]
		if a.Duration <= 0 {
			t.Errorf("attempt %d: duration %s, want > 0", i+1, a.Duration)
		}
		a.Duration = 0
		if a != want {
			t.Errorf("attempt %d = %+v, want %+v", i+1, a, want)
		}
	}
}

func TestTokenTransportFailureIsReported(t *testing.T) {
	rec := &recorder{}
	opts := fastOptions(rec)
	opts.RetryMax = 1
	_, err := NewClient(refusedURL(t), testCreds, opts).Token(context.Background(), []string{"openid"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 0 || e.Err == nil || !e.Retryable() {
		t.Fatalf("err = %v, want a retryable *Error without status", err)
	}
	if !strings.Contains(e.Hint, "HTTPS_PROXY") {
		t.Errorf("hint = %q, want it to mention the proxy variables", e.Hint)
	}
	got := rec.all()
	if len(got) != 2 || got[0].Err == nil || got[0].Status != 0 || !got[0].Retrying || got[1].Retrying {
		t.Errorf("attempts = %+v, want two failed attempts, the first retrying", got)
	}
}

func TestTokenMaxElapsedBound(t *testing.T) {
	rec := &recorder{}
	srv := hangingServer(t)
	opts := fastOptions(rec)
	opts.RetryMax = 100
	opts.AttemptTimeout = 200 * time.Millisecond
	opts.MaxElapsed = time.Second

	start := time.Now()
	_, err := NewClient(srv.URL, testCreds, opts).Token(context.Background(), []string{"openid"})
	elapsed := time.Since(start)

	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 0 || !e.Retryable() {
		t.Fatalf("err = %v, want a retryable *Error without status", err)
	}
	if elapsed > 2*time.Second {
		t.Errorf("took %s, want the 1s bound to hold", elapsed)
	}
	if n := len(rec.all()); n < 2 {
		t.Errorf("%d attempts, want the attempt timeout to leave room for retries", n)
	}
}

func TestTokenRetryAfterBeyondBudget(t *testing.T) {
	rec := &recorder{}
	s := &script{replies: []reply{jsonReply(429, `{}`).with("Retry-After", "30")}}
	srv := newServer(t, s)
	opts := fastOptions(rec)
	opts.MaxElapsed = 5 * time.Second

	start := time.Now()
	_, err := NewClient(srv.URL, testCreds, opts).Token(context.Background(), []string{"openid"})
	elapsed := time.Since(start)

	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 429 || !e.Retryable() || !strings.Contains(e.Hint, "throttling") {
		t.Fatalf("err = %v, want the 429 with a throttling hint", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("took %s: slept on a Retry-After beyond the budget", elapsed)
	}
	if got := rec.all(); len(got) != 1 || got[0].Retrying {
		t.Errorf("attempts = %+v, want one, not retrying", got)
	}
}

func TestTokenHonoursContext(t *testing.T) {
	tests := []struct {
		name    string
		handler func(t *testing.T) *httptest.Server
		ctx     func() (context.Context, context.CancelFunc)
		wantErr error
	}{{
		name:    "cancelled while waiting for an answer",
		handler: hangingServer,
		ctx:     cancelAfter(100 * time.Millisecond),
		wantErr: context.Canceled,
	}, {
		name: "cancelled while waiting to retry",
		handler: func(t *testing.T) *httptest.Server {
			return newServer(t, &script{replies: []reply{jsonReply(503, `{}`).with("Retry-After", "20")}})
		},
		ctx:     cancelAfter(100 * time.Millisecond),
		wantErr: context.Canceled,
	}, {
		name:    "caller's deadline shorter than MaxElapsed",
		handler: hangingServer,
		ctx: func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		},
		wantErr: context.DeadlineExceeded,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := tt.handler(t)
			ctx, cancel := tt.ctx()
			defer cancel()
			opts := Options{MaxElapsed: time.Minute, AttemptTimeout: 30 * time.Second}

			start := time.Now()
			_, err := NewClient(srv.URL, testCreds, opts).Token(ctx, []string{"openid"})
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("err = %v, want %v", err, tt.wantErr)
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("took %s to notice the context", elapsed)
			}
		})
	}
}

func cancelAfter(d time.Duration) func() (context.Context, context.CancelFunc) {
	return func() (context.Context, context.CancelFunc) {
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(d, cancel)
		return ctx, cancel
	}
}

func TestTokenUntrustedCertificate(t *testing.T) {
	rec := &recorder{}
	s := &script{replies: []reply{tokenReply("60")}}
	srv := quietTLSServer(t, s)

	_, err := NewClient(srv.URL, testCreds, Options{OnAttempt: rec.observe}).Token(context.Background(), []string{"openid"})
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 0 || e.Retryable() {
		t.Fatalf("err = %v, want a non-retryable *Error without status", err)
	}
	if !strings.Contains(e.Hint, "certificate") || !strings.Contains(e.Hint, "ims_url") {
		t.Errorf("hint = %q, want it to name the certificate and ims_url", e.Hint)
	}
	if n := len(rec.all()); n != 1 || s.hits.Load() != 0 {
		t.Errorf("%d attempts, %d reached the handler; want 1 and 0", n, s.hits.Load())
	}
}

func TestTokenNeedsScopes(t *testing.T) {
	_, err := NewClient("http://127.0.0.1:1", testCreds, Options{}).Token(context.Background(), nil)
	var e *Error
	if !errors.As(err, &e) || e.Retryable() || !strings.Contains(err.Error(), "no scopes") {
		t.Errorf("err = %v, want a non-retryable *Error about scopes", err)
	}
}

func TestInvalidate(t *testing.T) {
	tests := []struct {
		name     string
		replies  []reply
		wantErr  bool
		wantCode string
	}{
		{"200 revokes", []reply{{status: 200}}, false, ""},
		{"already invalid token", []reply{jsonReply(400, `{"error":"invalid_token","error_description":"token is invalid"}`)}, false, ""},
		{"refused client", []reply{jsonReply(401, `{"error":"invalid_client","error_description":"invalid client"}`)}, true, "invalid_client"},
		{"400 for another reason", []reply{jsonReply(400, `{"error":"invalid_client"}`)}, true, "invalid_client"},
		{"500 retried then 200", []reply{jsonReply(500, `{}`), {status: 200}}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bad []string
			s := &script{replies: tt.replies, check: func(r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				form, _ := url.ParseQuery(string(body))
				want := url.Values{"token_type": {"access_token"}, "token": {testToken}, "client_id": {testClientID}, "client_secret": {testSecret}}
				switch {
				case r.Method != http.MethodPost || r.URL.Path != "/ims/invalidate_token/v2" || r.URL.RawQuery != "":
					bad = append(bad, "request "+r.Method+" "+r.URL.String())
				case r.Header.Get("X-IMS-ClientId") != testClientID:
					bad = append(bad, "X-IMS-ClientId "+r.Header.Get("X-IMS-ClientId"))
				case !reflect.DeepEqual(form, want):
					bad = append(bad, "form "+form.Encode())
				}
			}}
			srv := newServer(t, s)
			err := NewClient(srv.URL, testCreds, fastOptions(&recorder{})).Invalidate(context.Background(), testToken)
			for _, b := range bad {
				t.Errorf("unexpected %s", b)
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("Invalidate() = %v, want error %v", err, tt.wantErr)
			}
			var e *Error
			if tt.wantErr && (!errors.As(err, &e) || e.Op != OpInvalidate || e.Code != tt.wantCode) {
				t.Errorf("err = %#v, want *Error with code %q", err, tt.wantCode)
			}
		})
	}
}

func TestTokenUsesCallersHTTPClient(t *testing.T) {
	srv := quietTLSServer(t, &script{replies: []reply{tokenReply("60")}})
	// srv.Client trusts the test certificate: the caller's TLS settings apply.
	tok, err := NewClient(srv.URL, testCreds, Options{HTTPClient: srv.Client()}).Token(context.Background(), []string{"openid"})
	if err != nil || tok.AccessToken != testToken {
		t.Fatalf("Token() = %v, %v; want success over the caller's client", tok, err)
	}
}

func TestTokenConcurrentUse(t *testing.T) {
	s := &script{replies: []reply{jsonReply(503, `{}`), tokenReply("60")}}
	c := NewClient(newServer(t, s).URL, testCreds, fastOptions(&recorder{}))
	errs := make(chan error, 20)
	for range cap(errs) {
		go func() {
			_, err := c.Token(context.Background(), []string{"openid"})
			errs <- err
		}()
	}
	for range cap(errs) {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
