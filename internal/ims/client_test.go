package ims

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Long enough to be scrubbed, distinctive enough to search for.
const (
	testClientID = "test-client-id"
	testSecret   = "p8e-TestClientSecret-9f3c2a71"
	testToken    = "eyJhbGci.TestAccessToken.4b1d9e77"
)

var testCreds = Credentials{ClientID: testClientID, ClientSecret: testSecret}

// recorder collects what OnAttempt reports.
type recorder struct {
	mu       sync.Mutex
	attempts []Attempt
}

func (r *recorder) observe(a Attempt) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.attempts = append(r.attempts, a)
}

func (r *recorder) all() []Attempt {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Attempt(nil), r.attempts...)
}

// fastOptions keeps retry waits short so tests do not crawl.
func fastOptions(rec *recorder) Options {
	return Options{RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond, OnAttempt: rec.observe}
}

// reply is one canned HTTP response.
type reply struct {
	status int
	header map[string]string
	body   string
}

func jsonReply(status int, body string) reply {
	return reply{status: status, header: map[string]string{"Content-Type": "application/json;charset=utf-8"}, body: body}
}

func (r reply) with(k, v string) reply {
	h := map[string]string{}
	for k, v := range r.header {
		h[k] = v
	}
	h[k] = v
	r.header = h
	return r
}

func tokenReply(expiresIn string) reply {
	return jsonReply(http.StatusOK, fmt.Sprintf(`{"access_token":%q,"token_type":"bearer","expires_in":%s}`, testToken, expiresIn))
}

// script is a server answering with replies in order, repeating the last.
type script struct {
	hits    atomic.Int32
	replies []reply
	check   func(*http.Request) // runs on every request, in the handler
}

func (s *script) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := int(s.hits.Add(1))
	if s.check != nil {
		s.check(r)
	}
	rep := s.replies[min(n, len(s.replies))-1]
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if w.Header().Get("x-debug-id") == "" {
		w.Header().Set("x-debug-id", fmt.Sprintf("dbg-%d", n))
	}
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body) //nolint:errcheck // the test server's reply; the client under test checks what arrives
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// hangingServer accepts requests and never answers them.
func hangingServer(t *testing.T) *httptest.Server {
	t.Helper()
	done := make(chan struct{})
	srv := newServer(t, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-done:
		}
	}))
	t.Cleanup(func() { close(done) }) // runs before srv.Close
	return srv
}

// refusedURL is a loopback URL nothing listens on.
func refusedURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}

func quietTLSServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failures are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

func TestNewTransportDefaults(t *testing.T) {
	caller := &http.Client{Timeout: time.Hour}
	tr := newTransport(Options{HTTPClient: caller, RetryMax: -1, RetryWaitMin: time.Second, RetryWaitMax: time.Millisecond})
	if caller.Timeout != time.Hour || caller.CheckRedirect != nil {
		t.Error("the caller's http.Client was modified")
	}
	if tr.http.Timeout != defaultAttemptTimeout {
		t.Errorf("attempt timeout = %s, want %s", tr.http.Timeout, defaultAttemptTimeout)
	}
	if tr.retryMax != 0 {
		t.Errorf("negative RetryMax gave %d retries, want 0", tr.retryMax)
	}
	if tr.waitMax != time.Second {
		t.Errorf("waitMax = %s, want it raised to waitMin", tr.waitMax)
	}

	d := newTransport(Options{})
	if d.retryMax != defaultRetryMax || d.waitMin != defaultRetryWaitMin || d.waitMax != defaultRetryWaitMax ||
		d.maxElapsed != defaultMaxElapsed || d.logger == nil || d.http.Transport == nil {
		t.Errorf("zero Options did not get the defaults: %+v", d)
	}
}

func TestManagementScopesIsACopy(t *testing.T) {
	s := ManagementScopes()
	s[0] = "changed"
	if ManagementScopes()[0] != "AdobeID" {
		t.Error("ManagementScopes returned shared state")
	}
}
