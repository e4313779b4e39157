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
		{"500 ignores it", resp(500, "7"), 10 * time.Millisecond, 20 * time.Millisecond},
		{"429 without one", resp(429, ""), 10 * time.Millisecond, 20 * time.Millisecond},
		{"no response", nil, 10 * time.Millisecond, 20 * time.Millisecond},
	}
	for _, tt := range tests {
		if got := c.backoff(tt.resp); got < tt.min || got > tt.max {
			t.Errorf("%s: wait %s, want within [%s, %s]", tt.name, got, tt.min, tt.max)
		}
	}
}
