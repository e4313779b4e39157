package ims

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

const twoMiB = 2 << 20

// readCounter counts the bytes the client under test reads of response
// bodies, below its own reader: what it took off the connection, whatever it
// then made of it.
type readCounter struct {
	base http.RoundTripper
	read atomic.Int64
}

func (c *readCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = &countedBody{ReadCloser: resp.Body, read: &c.read}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	read *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read.Add(int64(n))
	return n, err
}

// limitOptions make one attempt, with an attempt timeout long enough that a
// client reading without a limit would fail these tests by what it returns,
// not by giving up.
func limitOptions(counter *readCounter) Options {
	return Options{HTTPClient: &http.Client{Transport: counter}, RetryMax: -1, AttemptTimeout: time.Minute, MaxElapsed: time.Minute}
}

// padTo makes a JSON document of exactly n bytes from a JSON object (its
// closing brace last): with a "padding" string field when inField, else
// with spaces after the object. Either way the whole is valid JSON that a
// client reading without a limit accepts.
func padTo(t *testing.T, object string, n int, inField bool) []byte {
	t.Helper()
	if !inField {
		return []byte(object + strings.Repeat(" ", n-len(object)))
	}
	head := strings.TrimSuffix(object, "}") + `,"padding":"`
	tail := `"}`
	return []byte(head + strings.Repeat("x", n-len(head)-len(tail)) + tail)
}

// TestResponseBodyLimit answers each call that parses a body with a valid
// JSON answer of 2 MiB, and checks that the call fails, saying why, after
// reading no more than 1 MiB and one byte. The bodies are built so that
// reading without a limit succeeds: a token or secret object padded with
// spaces (whose first 1 MiB also parses, so a client that cut the body at
// 1 MiB and parsed what it had would succeed too), or one holding a huge
// string field. A body of exactly 1 MiB is still read.
func TestResponseBodyLimit(t *testing.T) {
	tokenObject := fmt.Sprintf(`{"access_token":%q,"token_type":"bearer","expires_in":86399}`, testToken)
	createdObject := fmt.Sprintf(`{"uuid":"11ede8ab","client_secret":%q,"created_at":"1683005777000","expires_at":"PERMANENT"}`, newSecretValue)
	listObject := `{"client_id":"test-client-id","client_secrets":[]}`

	calls := map[string]func(ctx context.Context, url string, o Options) error{
		OpToken: func(ctx context.Context, url string, o Options) error {
			_, err := NewClient(url, testCreds, o).Token(ctx, []string{"openid"})
			return err
		},
		OpListSecrets: func(ctx context.Context, url string, o Options) error {
			_, err := NewManagement(url, testClientID, o).ListSecrets(ctx, testBearer, testOrg, testCredential)
			return err
		},
		OpCreateSecret: func(ctx context.Context, url string, o Options) error {
			_, err := NewManagement(url, testClientID, o).CreateSecret(ctx, testBearer, testOrg, testCredential)
			return err
		},
	}
	for _, tc := range []struct {
		name, op, object string
		inField          bool
		size             int
		wantOK           bool
	}{
		{"token padded after the object", OpToken, tokenObject, false, twoMiB, false},
		{"token with a huge field", OpToken, tokenObject, true, twoMiB, false},
		{"token one byte over", OpToken, tokenObject, false, maxBody + 1, false},
		{"token of exactly 1 MiB", OpToken, tokenObject, true, maxBody, true},
		{"secret list padded after the object", OpListSecrets, listObject, false, twoMiB, false},
		{"secret list of exactly 1 MiB", OpListSecrets, listObject, false, maxBody, true},
		{"new secret with a huge field", OpCreateSecret, createdObject, true, twoMiB, false},
		{"new secret padded after the object", OpCreateSecret, createdObject, false, twoMiB, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := padTo(t, tc.object, tc.size, tc.inField)
			if len(body) != tc.size || !json.Valid(body) {
				t.Fatalf("test body: %d bytes, valid JSON %v; want %d bytes of valid JSON", len(body), json.Valid(body), tc.size)
			}
			status := http.StatusOK
			if tc.op == OpCreateSecret {
				status = http.StatusCreated
			}
			srv := newServer(t, &script{replies: []reply{jsonReply(status, string(body))}})
			counter := &readCounter{base: http.DefaultTransport}

			err := calls[tc.op](t.Context(), srv.URL, limitOptions(counter))
			read := counter.read.Load()
			if tc.wantOK {
				if err != nil {
					t.Fatalf("a body of exactly 1 MiB was refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("a %d-byte body was accepted; the client read %d bytes of it", len(body), read)
			}
			var e *Error
			if !errors.As(err, &e) || e.Op != tc.op || e.StatusCode != status {
				t.Fatalf("error %v (%T), want an *Error for %q with HTTP %d", err, err, tc.op, status)
			}
			if msg := err.Error(); !strings.Contains(msg, "larger than 1 MiB") {
				t.Errorf("error %q does not say the body is larger than 1 MiB", msg)
			}
			if e.Retryable() {
				t.Error("an oversized 2xx answer counts as retryable: it would be fetched again")
			}
			assertNoSecrets(t, "error", err.Error())
			if strings.Contains(err.Error(), newSecretValue) {
				t.Error("error holds the new secret's value")
			}
			if read > maxBody+1 {
				t.Errorf("the client read %d bytes of the body, more than 1 MiB and the one byte that shows there is more", read)
			}
		})
	}
}

// TestEndlessResponseBodyIsNotRead answers a token request with a body that
// never ends. The call must fail with the size error, not run until its
// timeout, and the server must see the client hang up: its writes fail or
// the request's context ends. (With a finite body of 2 MiB the server cannot
// tell: the kernel's socket buffers on loopback can take the whole body
// whether or not the client reads it, so that case is judged by the bytes
// the client read, in TestResponseBodyLimit.)
func TestEndlessResponseBodyIsNotRead(t *testing.T) {
	type outcome struct {
		written int64
		err     error
	}
	done := make(chan outcome, 1)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat("x", 64<<10))
		var o outcome
		if n, err := fmt.Fprintf(w, `{"access_token":%q,"expires_in":86399,"padding":"`, testToken); err != nil {
			o.err = err
		} else {
			o.written = int64(n)
		}
		for o.err == nil {
			if err := r.Context().Err(); err != nil {
				o.err = fmt.Errorf("request context: %w", err)
				break
			}
			n, err := w.Write(chunk)
			o.written += int64(n)
			o.err = err
		}
		done <- o
	}))
	counter := &readCounter{base: http.DefaultTransport}

	_, err := NewClient(srv.URL, testCreds, limitOptions(counter)).Token(t.Context(), []string{"openid"})
	if err == nil || !strings.Contains(err.Error(), "larger than 1 MiB") {
		t.Fatalf("token from an endless body: %v, want the size error", err)
	}
	if read := counter.read.Load(); read > maxBody+1 {
		t.Errorf("the client read %d bytes, more than 1 MiB and one byte", read)
	}
	hungUp := time.NewTimer(30 * time.Second)
	defer hungUp.Stop()
	select {
	case o := <-done:
		if o.err == nil {
			t.Fatal("the handler stopped without an error") // cannot happen: the loop ends only on one
		}
		t.Logf("the server stopped after writing %d bytes: %v", o.written, o.err)
	case <-hungUp.C:
		t.Fatal("the server is still writing 30s after the call returned: the client did not hang up")
	}
}
