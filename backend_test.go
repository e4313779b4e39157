package adobeims

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

const (
	testClientID     = "test-client-id"
	testClientSecret = "p8e-Zq7Rw2Lp9xKd4Vn8Tt3Hy6Bm1Gc5Fj"
	testScopes       = "openid,AdobeID,firefly_api,ff_apis"
	testMount        = "adobe/"
)

// testEnv is a backend wired to an in-process IMS emulator, with a fake
// clock and its log captured so tests can search it for secrets.
type testEnv struct {
	t       *testing.T
	b       *backend
	storage logical.Storage
	emu     *imsemu.Emulator
	srv     *httptest.Server
	clock   *fakeClock
	logs    *syncBuffer
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	return newTestEnvWith(t, envOptions{})
}

// envOptions vary the node newTestEnvWith makes; the zero value is
// newTestEnv's.
type envOptions struct {
	// system stands in for Vault's system view, as for a performance standby
	// or secondary (nil: the SDK's test view, an active node without
	// replication).
	system logical.SystemView
	// afterIMS, if set, runs when an answer from IMS has arrived, before the
	// plugin reads it: a test moves the clock there to play a slow answer,
	// however often the plugin looks at the clock.
	afterIMS func(*http.Request)
}

// hookTransport runs after on each round trip that got an answer.
type hookTransport struct{ after func(*http.Request) }

func (h hookTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil {
		h.after(req)
	}
	return resp, err
}

func newTestEnvWith(t *testing.T, o envOptions) *testEnv {
	t.Helper()
	sys := o.system
	clock := testclock.New(time.Now().UTC())
	emu := newTestEmulator()
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)

	logs := &syncBuffer{}
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	if sys != nil {
		conf.System = sys
	}
	var httpClient *http.Client
	if o.afterIMS != nil {
		httpClient = &http.Client{Transport: hookTransport{after: o.afterIMS}}
	}
	b := newBackend(backendOptions{
		now:        clock.Now,
		httpClient: httpClient,
		imsOptions: ims.Options{
			RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
			MaxElapsed: 5 * time.Second, AttemptTimeout: 2 * time.Second,
		},
	})
	if err := b.setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, b: b, storage: conf.StorageView, emu: emu, srv: srv, clock: clock, logs: logs}
	t.Cleanup(func() {
		b.Clean(context.Background())
		env.assertNoSecretsIn("plugin log", logs.String())
	})
	return env
}

// newTestEmulator is the IMS emulator unit tests and benchmarks talk to: the
// test credential, granted testScopes and one more, issuing 24-hour tokens.
func newTestEmulator() *imsemu.Emulator {
	return imsemu.New(imsemu.Config{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		Scopes:       strings.Split(testScopes+",read_organizations", ","),
		ExpiresIn:    24*time.Hour - time.Second,
	})
}

// changeStoredConfig edits the stored config the way another node's write
// would, without going through this backend.
func (e *testEnv) changeStoredConfig(edit func(*config)) {
	e.t.Helper()
	cfg, err := getConfig(e.t.Context(), e.storage)
	if err != nil || cfg == nil {
		e.t.Fatalf("reading the stored config: %v", err)
	}
	edit(cfg)
	if err := putConfig(e.t.Context(), e.storage, cfg); err != nil {
		e.t.Fatal(err)
	}
}

// configure writes a working config.
func (e *testEnv) configure(extra map[string]any) {
	e.t.Helper()
	data := map[string]any{
		"client_id": testClientID, "client_secret": testClientSecret,
		"scopes": testScopes, "ims_url": e.srv.URL,
	}
	for k, v := range extra {
		data[k] = v
	}
	e.mustOK(e.write("config", data))
}

func (e *testEnv) request(op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage, MountPoint: testMount}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.assertNoSecretsIn("response to "+path, dump(resp, err))
	return resp, err
}

// write sends a create or an update, as Vault would after its existence check.
func (e *testEnv) write(path string, data map[string]any) (*logical.Response, error) {
	e.t.Helper()
	req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data, Storage: e.storage}
	_, exists, err := e.b.HandleExistenceCheck(context.Background(), req)
	if err != nil {
		// Vault answers 400 with this error (a UserError) or 404 for an
		// unsupported path, and calls no handler.
		return nil, err
	}
	var op logical.Operation = logical.UpdateOperation
	if !exists {
		op = logical.CreateOperation
	}
	return e.request(op, path, data)
}

func (e *testEnv) read(path string) (*logical.Response, error) {
	e.t.Helper()
	return e.request(logical.ReadOperation, path, nil)
}

// creds reads a token the way Vault issues a lease: IssueTime is set.
func (e *testEnv) creds(path string) *logical.Response {
	e.t.Helper()
	resp := e.mustOK(e.read(path))
	if resp.Secret == nil {
		e.t.Fatalf("%s returned no lease: %#v", path, resp)
	}
	resp.Secret.IssueTime = e.clock.Now()
	return resp
}

func (e *testEnv) renew(secret *logical.Secret) (*logical.Response, error) {
	e.t.Helper()
	req := &logical.Request{Operation: logical.RenewOperation, Path: "creds", Secret: secret, Storage: e.storage}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.assertNoSecretsIn("renew response", dump(resp, err))
	return resp, err
}

func (e *testEnv) revoke(secret *logical.Secret) error {
	e.t.Helper()
	req := &logical.Request{Operation: logical.RevokeOperation, Path: "creds", Secret: secret, Storage: e.storage}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.assertNoSecretsIn("revoke response", dump(resp, err))
	if err == nil && resp != nil && resp.IsError() {
		return resp.Error()
	}
	return err
}

func (e *testEnv) mustOK(resp *logical.Response, err error) *logical.Response {
	e.t.Helper()
	if err != nil {
		e.t.Fatalf("unexpected error: %v", err)
	}
	if resp != nil && resp.IsError() {
		e.t.Fatalf("unexpected error response: %v", resp.Error())
	}
	return resp
}

// mustFail asserts a 400-style error response whose message holds every want.
func (e *testEnv) mustFail(resp *logical.Response, err error, want ...string) string {
	e.t.Helper()
	var msg string
	switch {
	case err != nil:
		msg = err.Error()
	case resp != nil && resp.IsError():
		msg = resp.Error().Error()
	default:
		e.t.Fatalf("want an error mentioning %q, got success: %#v", want, resp)
	}
	for _, w := range want {
		if !strings.Contains(msg, w) {
			e.t.Errorf("error %q does not mention %q", msg, w)
		}
	}
	return msg
}

// assertNoSecretsIn fails when the client secret or any token the emulator
// issued appears in text.
func (e *testEnv) assertNoSecretsIn(where, text string) {
	e.t.Helper()
	if strings.Contains(text, testClientSecret) {
		e.t.Errorf("%s contains the client secret", where)
	}
	if strings.HasPrefix(where, "response to creds") {
		return // a creds response carries its own token, by design
	}
	for _, tok := range e.emu.Tokens() {
		if strings.Contains(text, tok.AccessToken) {
			e.t.Errorf("%s contains an issued access token", where)
		}
	}
}

func dump(resp *logical.Response, err error) string {
	var b strings.Builder
	if resp != nil {
		j, _ := json.Marshal(resp)
		b.Write(j)
	}
	if err != nil {
		b.WriteString(err.Error())
	}
	return b.String()
}

// fakeClock is the tests' clock: it moves only when told.
type fakeClock = testclock.Clock

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func jsonRoundTrip(in map[string]any) (map[string]any, error) {
	j, err := json.Marshal(in)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	return out, json.Unmarshal(j, &out)
}
