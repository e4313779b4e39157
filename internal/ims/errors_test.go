package ims

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{{
		name: "IMS refusal",
		err: &Error{Op: OpToken, StatusCode: 400, Code: "invalid_client", Description: "invalid client_secret parameter",
			DebugID: "4ae1", Hint: "check client_id and client_secret in the plugin config", Attempts: 1},
		want: "adobe ims token request: HTTP 400 invalid_client: invalid client_secret parameter (x-debug-id 4ae1): check client_id and client_secret in the plugin config",
	}, {
		name: "status only, after retries",
		err:  &Error{Op: OpInvalidate, StatusCode: 503, Attempts: 5},
		want: "adobe ims invalidate request: HTTP 503 (after 5 attempts)",
	}, {
		name: "no response",
		err:  &Error{Op: OpToken, Err: errors.New("connection refused"), Hint: "retry later"},
		want: "adobe ims token request: connection refused: retry later",
	}, {
		name: "management, Adobe I/O shape",
		err:  &Error{Op: OpListSecrets, StatusCode: 403, Code: "403003", Description: "Api Key is invalid"},
		want: "adobe i/o management list secrets request: HTTP 403 403003: Api Key is invalid",
	}, {
		name: "secrets scrubbed",
		err:  &Error{Op: OpToken, StatusCode: 400, Description: "bad " + testSecret, redact: []string{testSecret}},
		want: "adobe ims token request: HTTP 400: bad [redacted]",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() =\n%q, want\n%q", got, tt.want)
			}
		})
	}
}

func TestErrorRetryable(t *testing.T) {
	certErr := fmt.Errorf("tls: %w", x509.UnknownAuthorityError{})
	tests := []struct {
		name string
		err  *Error
		want bool
	}{
		{"429", &Error{StatusCode: 429}, true},
		{"500", &Error{StatusCode: 500}, true},
		{"503", &Error{StatusCode: 503}, true},
		{"501", &Error{StatusCode: 501}, false},
		{"400", &Error{StatusCode: 400}, false},
		{"200 with a bad body", &Error{StatusCode: 200, Err: localErrorf("no access_token")}, false},
		{"network", &Error{Err: errors.New("connection reset by peer")}, true},
		{"timeout", &Error{Err: context.DeadlineExceeded}, true},
		{"cancelled by the caller", &Error{Err: context.Canceled}, true},
		{"untrusted certificate", &Error{Err: certErr}, false},
		{"bad input", &Error{Err: localErrorf("no scopes given")}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Retryable(); got != tt.want {
				t.Errorf("Retryable() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		header string
		want   time.Duration
		ok     bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"soon", 0, false},
		{"99999999999999", maxRetryAfter, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0, true},
	}
	for _, tt := range tests {
		got, ok := retryAfter(tt.header, now)
		if got != tt.want || ok != tt.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", tt.header, got, ok, tt.want, tt.ok)
		}
	}
}

func TestJitteredBackoff(t *testing.T) {
	waitMin, waitMax := 100*time.Millisecond, time.Second
	for attempt := 1; attempt <= 40; attempt++ {
		ceiling := min(waitMax, waitMin<<min(attempt-1, 20))
		for range 20 {
			d := jitteredBackoff(waitMin, waitMax, attempt)
			if d < max(waitMin, ceiling/2) || d > ceiling {
				t.Fatalf("attempt %d: wait %s outside [%s, %s]", attempt, d, max(waitMin, ceiling/2), ceiling)
			}
		}
	}
}

// TestNoSecretsInErrorsOrLogs drives failures in which a careless server
// echoes the secret and the token, and checks neither reaches an error's
// text or the log.
func TestNoSecretsInErrorsOrLogs(t *testing.T) {
	var logs bytes.Buffer
	opts := fastOptions(&recorder{})
	opts.RetryMax = 1
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	// The token endpoint knows only the secret; invalidate knows the token too.
	echoSecret := fmt.Sprintf(`{"error":"invalid_client","error_description":"secret %s"}`, testSecret)
	echoBoth := fmt.Sprintf(`{"error":"invalid_client","error_description":"secret %s token %s"}`, testSecret, testToken)

	tests := []struct {
		name string
		run  func(c *Client) error
		srv  []reply
	}{
		{"token refused, echoing", tokenCall, []reply{jsonReply(400, echoSecret)}},
		{"token retried", tokenCall, []reply{jsonReply(500, echoSecret)}},
		{"token body with a bad expires_in", tokenCall, []reply{tokenReply(`"3600"`)}},
		{"token body that is HTML", tokenCall, []reply{{status: 200, header: map[string]string{"Content-Type": "text/html"}, body: "<p>" + testToken + "</p>"}}},
		{"invalidate refused, echoing", invalidateCall, []reply{jsonReply(401, echoBoth)}},
		{"invalidate, 502 page", invalidateCall, []reply{{status: 502, body: testToken}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newServer(t, &script{replies: tt.srv})
			err := tt.run(NewClient(srv.URL, testCreds, opts))
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			assertNoSecrets(t, "Error()", err.Error())
			assertNoSecrets(t, "Code", e.Code)
			assertNoSecrets(t, "Description", e.Description)
		})
	}
	t.Run("no server", func(t *testing.T) {
		err := tokenCall(NewClient(refusedURL(t), testCreds, opts))
		if err == nil {
			t.Fatal("want an error")
		}
		assertNoSecrets(t, "Error()", err.Error())
	})
	if !strings.Contains(logs.String(), "op=token") {
		t.Errorf("attempts were not logged:\n%s", logs.String())
	}
	assertNoSecrets(t, "log", logs.String())
}

func tokenCall(c *Client) error {
	_, err := c.Token(context.Background(), []string{"openid"})
	return err
}

func invalidateCall(c *Client) error { return c.Invalidate(context.Background(), testToken) }

func assertNoSecrets(t *testing.T, what, s string) {
	t.Helper()
	for _, secret := range []string{testSecret, testToken} {
		if strings.Contains(s, secret) {
			t.Errorf("%s holds %q:\n%s", what, secret, s)
		}
	}
}

func TestBackoffHonoursRetryAfter(t *testing.T) {
	c := &call{t: newTransport(Options{RetryWaitMin: 10 * time.Millisecond, RetryWaitMax: 20 * time.Millisecond}), attempts: 1}
	resp := func(status int, retryAfter string) *http.Response {
		return &http.Response{StatusCode: status, Header: http.Header{"Retry-After": {retryAfter}}}
	}
	tests := []struct {
		name     string
		resp     *http.Response
		min, max time.Duration
	}{
		{"429 seconds", resp(429, "7"), 7 * time.Second, 7 * time.Second},
		{"503 seconds", resp(503, "2"), 2 * time.Second, 2 * time.Second},
		{"503 date", resp(503, time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)), 58 * time.Second, time.Minute},
		{"500 seconds", resp(500, "7"), 7 * time.Second, 7 * time.Second},
		{"502 seconds", resp(502, "3"), 3 * time.Second, 3 * time.Second},
		{"504 date", resp(504, time.Now().Add(time.Minute).UTC().Format(http.TimeFormat)), 58 * time.Second, time.Minute},
		{"502 without one", resp(502, ""), 10 * time.Millisecond, 20 * time.Millisecond},
		{"429 without one", resp(429, ""), 10 * time.Millisecond, 20 * time.Millisecond},
		{"no response", nil, 10 * time.Millisecond, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := c.backoff(tt.resp); got < tt.min || got > tt.max {
			t.Errorf("%s: wait %s, want within [%s, %s]", tt.name, got, tt.min, tt.max)
		}
	}
}

// TestRedactBeforeTruncate quotes secrets that straddle the point where
// upstream text is cut short: redaction must see the whole secret, so no
// part of it may survive the cut. (The leak* secrets share no 6 characters
// with the package's own wording, so any 6 of theirs in the text are a leak.)
func TestRedactBeforeTruncate(t *testing.T) {
	const secret, token, newSecret = leakSecret, leakToken, leakNewSecret
	creds := Credentials{ClientID: testClientID, ClientSecret: secret}
	straddle := func(n int, secret string) string { return strings.Repeat("x", n) + secret + " trailing" }
	var logs bytes.Buffer
	opts := fastOptions(&recorder{})
	opts.RetryMax = -1
	opts.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Trace})
	mint := func(url string) error {
		_, err := NewClient(url, creds, opts).Token(context.Background(), []string{"openid"})
		return err
	}
	invalidate := func(url string) error { return NewClient(url, creds, opts).Invalidate(context.Background(), token) }
	list := func(url string) error {
		_, err := NewManagement(url, testClientID, opts).ListSecrets(context.Background(), token, testOrg, testCredential)
		return err
	}
	create := func(url string) error {
		_, err := NewManagement(url, testClientID, opts).CreateSecret(context.Background(), token, testOrg, testCredential)
		return err
	}
	tests := []struct {
		name   string
		secret string
		call   func(url string) error
		reply  reply
	}{
		{"IMS error_description cut at 300", secret, mint,
			jsonReply(400, fmt.Sprintf(`{"error":"invalid_client","error_description":%q}`, straddle(290, secret)))},
		{"IMS error cut at 100", secret, mint,
			jsonReply(400, fmt.Sprintf(`{"error":%q}`, straddle(90, secret)))},
		{"IMS error_description echoing the token to invalidate", token, invalidate,
			jsonReply(401, fmt.Sprintf(`{"error":"invalid_client","error_description":%q}`, straddle(290, token)))},
		{"x-debug-id cut at 100", secret, mint,
			jsonReply(400, `{"error":"invalid_client"}`).with("x-debug-id", straddle(92, secret))},
		{"Content-Type cut at 60", secret, mint,
			reply{status: 200, header: map[string]string{"Content-Type": "text/html; charset=" + straddle(30, secret)}, body: "<p>no</p>"}},
		{"media type, which parsing lowercases", secret, mint,
			reply{status: 200, header: map[string]string{"Content-Type": "application/x" + secret}, body: "<p>no</p>"}},
		{"Adobe I/O message cut at 300", token, list,
			jsonReply(400, fmt.Sprintf(`{"error_code":"400001","message":%q}`, straddle(290, token)))},
		{"Adobe I/O error_code cut at 100", token, list,
			jsonReply(403, fmt.Sprintf(`{"error_code":%q,"message":"Api Key is invalid"}`, straddle(90, token)))},
		{"Adobe I/O body of another type", token, list,
			reply{status: 502, header: map[string]string{"Content-Type": "text/" + straddle(50, token)}, body: "<p>no</p>"}},
		{"listed timestamp cut at 40", token, list,
			jsonReply(200, fmt.Sprintf(`{"client_secrets":[{"uuid":"11ede8ab","created_at":%q}]}`, straddle(30, token)))},
		{"created secret's timestamp quoting the new secret", newSecret, create,
			jsonReply(201, fmt.Sprintf(`{"client_secret":%q,"uuid":"11ede8ab","created_at":%q}`, newSecret, straddle(30, newSecret)))},
		{"created secret's timestamp quoting the new secret sent after it", newSecret, create,
			jsonReply(201, fmt.Sprintf(`{"uuid":"11ede8ab","created_at":%q,"client_secret":%q}`, straddle(30, newSecret), newSecret))},
		{"IMS quoting part of the secret", secret, mint,
			jsonReply(400, fmt.Sprintf(`{"error":"invalid_client","error_description":"bad secret %s..."}`, secret[:12]))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logs.Reset()
			srv := newServer(t, &script{replies: []reply{tt.reply}})
			err := tt.call(srv.URL)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if !strings.Contains(err.Error(), "[redacted]") {
				t.Errorf("Error() does not say something was redacted: %s", err)
			}
			for what, s := range map[string]string{"Error()": err.Error(), "Code": e.Code, "Description": e.Description, "DebugID": e.DebugID, "log": logs.String()} {
				assertNoFragment(t, what, s, tt.secret)
			}
		})
	}
}

// assertNoFragment fails if s holds any 6 consecutive characters of secret,
// in any case.
func assertNoFragment(t *testing.T, what, s, secret string) {
	t.Helper()
	lower, secret := strings.ToLower(s), strings.ToLower(secret)
	for i := 0; i+minRedactLen <= len(secret); i++ {
		if frag := secret[i : i+minRedactLen]; strings.Contains(lower, frag) {
			t.Errorf("%s holds %q, part of the secret %q:\n%s", what, frag, secret, s)
			return
		}
	}
}

func TestQuote(t *testing.T) {
	const secret = leakSecret
	x := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name, in string
		max      int
		want     string
	}{
		{"short text", "  invalid client_secret parameter\n", 300, "invalid client_secret parameter"},
		{"control characters", "a\tb\x00c", 300, "a b c"},
		{"cut", x(12), 10, x(10) + "..."},
		{"cut inside a rune", x(9) + "é", 10, x(9) + "..."},
		{"whole secret", "bad " + secret + " here", 300, "bad [redacted] here"},
		{"secret straddling the cut: the redaction is kept whole", x(8) + secret, 10, x(8) + "[redacted]..."},
		{"secret starting at the cut", x(10) + secret, 10, x(10) + "..."},
		{"secret starting 5 bytes before the cut", x(5) + secret + x(100), 10, x(5) + "[redacted]..."},
		{"secret ending at the cut", x(4) + secret + x(5), 4 + len(secret), x(4) + "[redacted]..."},
		{"start of the secret", "bad " + secret[:8] + "...", 300, "bad [redacted]..."},
		{"end of the secret", "bad ..." + secret[len(secret)-7:], 300, "bad ...[redacted]"},
		{"fewer than 6 bytes of it stay", "bad " + secret[:5], 300, "bad " + secret[:5]},
		{"two secrets run together", secret + secret, 300, "[redacted]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := quote(tt.in, tt.max, []string{secret, "short"}); got != tt.want {
				t.Errorf("quote(%q, %d) =\n%q, want\n%q", tt.in, tt.max, got, tt.want)
			}
		})
	}
}
