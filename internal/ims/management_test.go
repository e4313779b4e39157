package ims

import (
	"context"
	"errors"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	testBearer     = "eyJhbGci.TestManagementBearer.77aa"
	testOrg        = "ABC123@AdobeOrg"
	testCredential = "cred/1" // a slash, to see it escaped
	secretsPath    = "/console/organizations/ABC123@AdobeOrg/credentials/cred%2F1/secrets"
	newSecretValue = "p8e-NewClientSecretValue-0c1d"
)

// seenRequests records what the management endpoints were sent.
type seenRequests struct {
	mu   sync.Mutex
	reqs []string // "METHOD escaped-path auth api-key"
}

func (s *seenRequests) check(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reqs = append(s.reqs, strings.Join([]string{r.Method, r.URL.EscapedPath(), r.Header.Get("Authorization"), r.Header.Get("x-api-key")}, " "))
}

func (s *seenRequests) assert(t *testing.T, method, path string, n int) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	want := strings.Join([]string{method, path, "Bearer " + testBearer, testClientID}, " ")
	if len(s.reqs) != n {
		t.Errorf("%d requests, want %d: %q", len(s.reqs), n, s.reqs)
	}
	for _, got := range s.reqs {
		if got != want {
			t.Errorf("request = %q, want %q", got, want)
		}
	}
}

func newManagementServer(t *testing.T, replies ...reply) (*Management, *seenRequests, *recorder) {
	t.Helper()
	seen, rec := &seenRequests{}, &recorder{}
	srv := newServer(t, &script{replies: replies, check: seen.check})
	return NewManagement(srv.URL, testClientID, fastOptions(rec)), seen, rec
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func TestListSecrets(t *testing.T) {
	m, seen, _ := newManagementServer(t, jsonReply(200, `{"client_id":"test-client-id","client_secrets":[
		{"uuid":"11ede8ab","created_at":"1683005777000","expires_at":"PERMANENT","secret_usages":[
			{"last_used_at":"1683162010101","grant_type":"client_credentials"},
			{"last_used_at":"1683162999999","grant_type":"other"}]},
		{"uuid":"22ffe9bc","created_at":"1683005888000","expires_at":"1714541888000","secret_usages":null}]}`))

	got, err := m.ListSecrets(context.Background(), testBearer, testOrg, testCredential)
	if err != nil {
		t.Fatal(err)
	}
	want := []Secret{
		{UUID: "11ede8ab", CreatedAt: ms(1683005777000), ExpiresAt: "PERMANENT", LastUsedAt: ms(1683162999999)},
		{UUID: "22ffe9bc", CreatedAt: ms(1683005888000), ExpiresAt: "1714541888000"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("secrets =\n%+v, want\n%+v", got, want)
	}
	if got[0].CreatedAt.Location() != time.UTC {
		t.Error("timestamps are not UTC")
	}
	seen.assert(t, http.MethodGet, secretsPath, 1)
}

func TestListSecretsUnusable(t *testing.T) {
	tests := []struct {
		name    string
		reply   reply
		wantErr string
	}{
		{"no list", jsonReply(200, `{"client_id":"x"}`), "no client_secrets list"},
		{"bad timestamp", jsonReply(200, `{"client_secrets":[{"uuid":"a","created_at":"yesterday"}]}`), `timestamp "yesterday" is not in milliseconds`},
		{"wrong type", jsonReply(200, `{"client_secrets":{"uuid":"a"}}`), `field "client_secrets" has the wrong type`},
		{"malformed", jsonReply(200, `{"client_secrets":[`), "malformed JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, _ := newManagementServer(t, tt.reply)
			_, err := m.ListSecrets(context.Background(), testBearer, testOrg, testCredential)
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != 200 || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want *Error for HTTP 200 containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestManagementRefused(t *testing.T) {
	tests := []struct {
		name               string
		reply              reply
		wantCode, wantDesc string
		wantHint           string
	}{
		{"Adobe I/O error shape", jsonReply(403, `{"error_code":"403003","message":"Api Key is invalid"}`), "403003", "Api Key is invalid", "I/O Management API"},
		{"IMS error shape", jsonReply(401, `{"error":"invalid_token","error_description":"token expired"}`), "invalid_token", "token expired", "manage_client_secrets"},
		{"unknown credential", jsonReply(404, `{"message":"not found"}`), "", "not found", "check org_id and credential_id"},
		{"bearer echoed", jsonReply(400, `{"message":"bad `+testBearer+`"}`), "", "bad [redacted]", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, _, rec := newManagementServer(t, tt.reply)
			_, err := m.ListSecrets(context.Background(), testBearer, testOrg, testCredential)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v, want *Error", err)
			}
			if e.Op != OpListSecrets || e.Code != tt.wantCode || e.Description != tt.wantDesc || !strings.Contains(e.Hint, tt.wantHint) {
				t.Errorf("error = %+v", e)
			}
			if strings.Contains(err.Error(), testBearer) {
				t.Errorf("error text holds the bearer token: %v", err)
			}
			if n := len(rec.all()); n != 1 {
				t.Errorf("%d attempts, want 1", n)
			}
		})
	}
}

func TestCreateSecret(t *testing.T) {
	m, seen, _ := newManagementServer(t, jsonReply(201,
		`{"client_secret":"`+newSecretValue+`","uuid":"33aa","created_at":"1683005999000","expires_at":"PERMANENT","secret_usages":null}`))

	got, err := m.CreateSecret(context.Background(), testBearer, testOrg, testCredential)
	if err != nil {
		t.Fatal(err)
	}
	want := &CreatedSecret{Secret: Secret{UUID: "33aa", CreatedAt: ms(1683005999000), ExpiresAt: "PERMANENT"}, ClientSecret: newSecretValue}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("created = %+v, want %+v", got, want)
	}
	seen.assert(t, http.MethodPost, secretsPath, 1)
}

func TestCreateSecretRetries(t *testing.T) {
	created := jsonReply(201, `{"client_secret":"`+newSecretValue+`","uuid":"33aa","created_at":"1683005999000","expires_at":"PERMANENT"}`)
	tests := []struct {
		name         string
		replies      []reply
		wantAttempts int
		wantStatus   int // 0: success
	}{
		{"500 may have created it: not retried", []reply{jsonReply(500, `{}`), created}, 1, 500},
		{"503 may have created it: not retried", []reply{jsonReply(503, `{}`).with("Retry-After", "0"), created}, 1, 503},
		{"429 was refused: retried", []reply{jsonReply(429, `{}`).with("Retry-After", "0"), created}, 2, 0},
		{"answer without the secret", []reply{jsonReply(201, `{"uuid":"33aa"}`)}, 1, 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, seen, _ := newManagementServer(t, tt.replies...)
			got, err := m.CreateSecret(context.Background(), testBearer, testOrg, testCredential)
			seen.assert(t, http.MethodPost, secretsPath, tt.wantAttempts)
			if tt.wantStatus == 0 {
				if err != nil || got.ClientSecret != newSecretValue {
					t.Errorf("CreateSecret() = %+v, %v; want the new secret", got, err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tt.wantStatus {
				t.Errorf("err = %v, want *Error with HTTP %d", err, tt.wantStatus)
			}
		})
	}
}

func TestCreateSecretRetriesRefusedConnection(t *testing.T) {
	rec := &recorder{}
	opts := fastOptions(rec)
	opts.RetryMax = 2
	_, err := NewManagement(refusedURL(t), testClientID, opts).CreateSecret(context.Background(), testBearer, testOrg, testCredential)
	var e *Error
	if !errors.As(err, &e) || e.StatusCode != 0 {
		t.Fatalf("err = %v, want *Error without status", err)
	}
	if n := len(rec.all()); n != 3 {
		t.Errorf("%d attempts, want 3: a refused connection never reached the server", n)
	}
}

func TestCreateSecretNotRetriedOnTimeout(t *testing.T) {
	rec := &recorder{}
	opts := fastOptions(rec)
	opts.AttemptTimeout = 100 * time.Millisecond
	_, err := NewManagement(hangingServer(t).URL, testClientID, opts).CreateSecret(context.Background(), testBearer, testOrg, testCredential)
	if err == nil {
		t.Fatal("want an error")
	}
	if n := len(rec.all()); n != 1 {
		t.Errorf("%d attempts, want 1: the server may have acted on the request", n)
	}
}

func TestDeleteSecret(t *testing.T) {
	tests := []struct {
		name         string
		replies      []reply
		wantAttempts int
		wantStatus   int // 0: success
	}{
		{"204 deletes", []reply{{status: 204}}, 1, 0},
		{"404 is already gone", []reply{jsonReply(404, `{"message":"not found"}`)}, 1, 0},
		{"500 retried", []reply{jsonReply(500, `{}`), {status: 204}}, 2, 0},
		{"403 refused", []reply{jsonReply(403, `{"error_code":"403003","message":"Api Key is invalid"}`)}, 1, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, seen, _ := newManagementServer(t, tt.replies...)
			err := m.DeleteSecret(context.Background(), testBearer, testOrg, testCredential, "33aa/x")
			seen.assert(t, http.MethodDelete, secretsPath+"/33aa%2Fx", tt.wantAttempts)
			if tt.wantStatus == 0 {
				if err != nil {
					t.Errorf("DeleteSecret() = %v, want nil", err)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != tt.wantStatus || e.Op != OpDeleteSecret {
				t.Errorf("err = %v, want *Error with HTTP %d", err, tt.wantStatus)
			}
		})
	}
}

func TestManagementNeedsInput(t *testing.T) {
	m := NewManagement("http://127.0.0.1:1", testClientID, Options{})
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"no bearer":     func() error { _, err := m.ListSecrets(ctx, "", testOrg, testCredential); return err },
		"no org":        func() error { _, err := m.CreateSecret(ctx, testBearer, "", testCredential); return err },
		"no credential": func() error { _, err := m.ListSecrets(ctx, testBearer, testOrg, ""); return err },
		"no uuid":       func() error { return m.DeleteSecret(ctx, testBearer, testOrg, testCredential, "") },
	} {
		var e *Error
		if err := call(); !errors.As(err, &e) || e.Attempts != 0 || e.Retryable() {
			t.Errorf("%s: err = %v, want a non-retryable *Error before any attempt", name, err)
		}
	}
}
