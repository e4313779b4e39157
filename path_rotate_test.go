package adobeims

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/testclock"
)

// Steps of a rotation as the network and storage see them.
const (
	opMint   = "mint"   // POST /ims/token/v3
	opList   = "list"   // GET    .../secrets
	opCreate = "create" // POST   .../secrets
	opDelete = "delete" // DELETE .../secrets/{uuid}
)

var errCrashed = errors.New("injected: the Vault node is down")

// rotateEnv is a testEnv whose emulator grants the I/O Management API scopes
// (never in the config's scopes), with hooks that fail Adobe calls and
// storage writes at chosen steps, a crash switch after which nothing works
// until restart, and a record of every client secret Adobe handed out, so
// that the leak checks cover rotated secrets too.
type rotateEnv struct {
	*testEnv
	mem *logical.InmemStorage // what survives a crash

	opts  rotateOptions
	waits chan string // operations that found the writer lock held

	mu        sync.Mutex
	crashed   bool
	secrets   []string              // every client secret value ever issued
	beforeNet func(op string) error // error: the request is not sent
	afterNet  func(op string) error // error: the request was served, its answer is lost
	hang      func(op string) bool  // true: the request hangs until its caller gives up
	beforePut func(key string) error
	afterPut  func(key string) error // error: the write happened, the caller hears otherwise
}

type rotateOptions struct {
	withoutManagementScopes bool
	// system stands in for Vault's system view; nil is the SDK's static one,
	// which, like Community Edition, has no rotation manager.
	system logical.SystemView
}

func newRotateEnv(t *testing.T, opts rotateOptions) *rotateEnv {
	t.Helper()
	scopes := strings.Split(testScopes+",read_organizations", ",")
	if !opts.withoutManagementScopes {
		for _, s := range ims.ManagementScopes() {
			if !slices.Contains(scopes, s) {
				scopes = append(scopes, s)
			}
		}
	}
	emu := imsemu.New(imsemu.Config{
		ClientID: testClientID, ClientSecret: testClientSecret, Scopes: scopes,
		ExpiresIn: 24*time.Hour - time.Second,
	})
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)

	e := &rotateEnv{mem: &logical.InmemStorage{}, secrets: []string{testClientSecret}, waits: make(chan string, 64), opts: opts}
	e.testEnv = &testEnv{t: t, emu: emu, srv: srv, clock: testclock.New(time.Now().UTC()), logs: &syncBuffer{}, storage: &faultyStorage{Storage: e.mem, env: e}}
	e.start()
	t.Cleanup(func() {
		e.b.Clean(context.Background())
		e.assertNoRotatedSecretsIn("plugin log", e.logs.String())
	})
	return e
}

// start makes a backend on the env's storage, as a Vault node starting does.
func (e *rotateEnv) start() {
	e.t.Helper()
	conf := logical.TestBackendConfig()
	conf.StorageView = e.storage
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: e.logs, Level: hclog.Trace})
	if e.opts.system != nil {
		conf.System = e.opts.system
	}
	e.b = newBackend(backendOptions{
		now:          e.clock.Now,
		onWriterWait: func(op string) { e.waits <- op },
		httpClient:   &http.Client{Transport: &faultyTransport{env: e}},
		imsOptions: ims.Options{
			RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
			MaxElapsed: 5 * time.Second, AttemptTimeout: 2 * time.Second,
		},
	})
	if err := e.b.setup(context.Background(), conf); err != nil {
		e.t.Fatal(err)
	}
}

// crash stops the node where it stands: from now on every Adobe call and
// storage operation fails, so no clean-up code can run.
func (e *rotateEnv) crash() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.crashed = true
	return errCrashed
}

func (e *rotateEnv) isCrashed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.crashed
}

// restart brings up a new backend on what storage kept, with no hooks.
func (e *rotateEnv) restart() {
	e.t.Helper()
	e.b.Clean(context.Background())
	e.mu.Lock()
	e.crashed = false
	e.beforeNet, e.afterNet, e.beforePut, e.afterPut = nil, nil, nil, nil
	e.mu.Unlock()
	e.start()
}

func (e *rotateEnv) clearHooks() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beforeNet, e.afterNet, e.beforePut, e.afterPut = nil, nil, nil, nil
}

func (e *rotateEnv) hooks() (beforeNet, afterNet, beforePut, afterPut func(string) error, crashed bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.beforeNet, e.afterNet, e.beforePut, e.afterPut, e.crashed
}

func (e *rotateEnv) recordSecret(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, s)
}

func (e *rotateEnv) allSecrets() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.secrets)
}

// assertNoRotatedSecretsIn fails when any client secret that ever existed,
// the first or a rotated one, appears in text.
func (e *rotateEnv) assertNoRotatedSecretsIn(where, text string) {
	e.t.Helper()
	for _, s := range e.allSecrets() {
		if strings.Contains(text, s) {
			e.t.Errorf("%s contains a client secret", where)
		}
	}
}

// configureForRotation writes a working config with org_id, credential_id
// and io_management_url; the config's scopes lack the management scopes.
func (e *rotateEnv) configureForRotation(extra map[string]any) *logical.Response {
	e.t.Helper()
	data := map[string]any{
		"client_id": testClientID, "client_secret": testClientSecret, "scopes": testScopes, "ims_url": e.srv.URL,
		"org_id": imsemu.DefaultOrgID, "credential_id": imsemu.DefaultCredentialID, "io_management_url": e.srv.URL,
	}
	for k, v := range extra {
		data[k] = v
	}
	return e.mustOK(e.write("config", data))
}

// rotate sends config/rotate-root as `vault write -f` does.
func (e *rotateEnv) rotate() (*logical.Response, error) {
	e.t.Helper()
	resp, err := e.request(logical.UpdateOperation, "config/rotate-root", nil)
	e.assertNoRotatedSecretsIn("response to config/rotate-root", dump(resp, err))
	return resp, err
}

// rollback runs Vault's rollback now, as if every WAL entry were old enough.
func (e *rotateEnv) rollback() {
	e.t.Helper()
	req := &logical.Request{Operation: logical.RollbackOperation, Data: map[string]any{"immediate": true}, Storage: e.storage}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.assertNoRotatedSecretsIn("rollback response", dump(resp, err))
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("rollback failed: %v %v", resp, err)
	}
}

// stored reads the config straight from storage, past any hook.
func (e *rotateEnv) stored() *config {
	e.t.Helper()
	cfg, err := getConfig(context.Background(), e.mem)
	if err != nil || cfg == nil {
		e.t.Fatalf("stored config: %v, %v", cfg, err)
	}
	return cfg
}

func (e *rotateEnv) walEntries() int {
	e.t.Helper()
	ids, err := framework.ListWAL(context.Background(), e.mem)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ids)
}

func (e *rotateEnv) uuidsAtAdobe() []string {
	var out []string
	for _, s := range e.emu.Secrets() {
		out = append(out, s.UUID)
	}
	return out
}

// assertSound checks the promise rotation keeps at every step: the stored
// secret works at Adobe, its uuid (once known) is one of the credential's,
// and the credential has at most two secrets.
func (e *rotateEnv) assertSound(when string) *config {
	e.t.Helper()
	cfg := e.stored()
	if !e.emu.SecretAccepted(cfg.ClientSecret) {
		e.t.Errorf("%s: the stored client secret is refused by IMS", when)
	}
	uuids := e.uuidsAtAdobe()
	if len(uuids) > 2 {
		e.t.Errorf("%s: the credential has %d secrets at Adobe, more than the 2 allowed", when, len(uuids))
	}
	if cfg.ClientSecretUUID != "" && !slices.Contains(uuids, cfg.ClientSecretUUID) {
		e.t.Errorf("%s: the stored uuid %s is not among Adobe's %v", when, cfg.ClientSecretUUID, uuids)
	}
	return cfg
}

// assertSettled checks that rotation left nothing to finish: the stored
// secret works and is the credential's only one at Adobe, and no
// write-ahead log entry is left.
func (e *rotateEnv) assertSettled(when string) *config {
	e.t.Helper()
	cfg := e.assertSound(when)
	if got := e.uuidsAtAdobe(); !slices.Equal(got, []string{cfg.ClientSecretUUID}) {
		e.t.Errorf("%s: Adobe has %v, want only the stored %s", when, got, cfg.ClientSecretUUID)
	}
	if n := e.walEntries(); n != 0 {
		e.t.Errorf("%s: %d write-ahead log entries left", when, n)
	}
	return cfg
}

// addSecretAtAdobe creates a second secret the way a person in the
// Developer Console would, and returns its uuid.
func (e *rotateEnv) addSecretAtAdobe() string {
	e.t.Helper()
	ctx := context.Background()
	tok, err := ims.NewClient(e.srv.URL, ims.Credentials{ClientID: testClientID, ClientSecret: e.stored().ClientSecret}, ims.Options{}).Token(ctx, ims.ManagementScopes())
	if err != nil {
		e.t.Fatal(err)
	}
	s, err := ims.NewManagement(e.srv.URL, testClientID, ims.Options{}).CreateSecret(ctx, tok.AccessToken, imsemu.DefaultOrgID, imsemu.DefaultCredentialID)
	if err != nil {
		e.t.Fatal(err)
	}
	e.recordSecret(s.ClientSecret)
	return s.UUID
}

// faultyTransport runs the env's hooks around every Adobe call and records
// every secret Adobe creates.
type faultyTransport struct{ env *rotateEnv }

func (f *faultyTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	e := f.env
	op := opOf(req)
	before, after, _, _, crashed := e.hooks()
	if crashed {
		return nil, errCrashed
	}
	e.mu.Lock()
	hang := e.hang
	e.mu.Unlock()
	if hang != nil && hang(op) {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	if before != nil {
		if err := before(op); err != nil {
			return nil, err
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	if op == opCreate && resp.StatusCode == http.StatusCreated {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var created struct {
			ClientSecret string `json:"client_secret"`
		}
		if json.Unmarshal(body, &created) == nil && created.ClientSecret != "" {
			e.recordSecret(created.ClientSecret)
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	if after != nil {
		if err := after(op); err != nil {
			resp.Body.Close()
			return nil, err
		}
	}
	return resp, nil
}

func opOf(req *http.Request) string {
	switch {
	case strings.HasSuffix(req.URL.Path, "/ims/token/v3"):
		return opMint
	case strings.HasSuffix(req.URL.Path, "/secrets") && req.Method == http.MethodGet:
		return opList
	case strings.HasSuffix(req.URL.Path, "/secrets") && req.Method == http.MethodPost:
		return opCreate
	case strings.Contains(req.URL.Path, "/secrets/") && req.Method == http.MethodDelete:
		return opDelete
	}
	return req.Method + " " + req.URL.Path
}

// faultyStorage runs the env's hooks around writes and fails everything
// once the env has crashed.
type faultyStorage struct {
	logical.Storage
	env *rotateEnv
}

func (s *faultyStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if s.env.isCrashed() {
		return nil, errCrashed
	}
	return s.Storage.Get(ctx, key)
}

func (s *faultyStorage) List(ctx context.Context, prefix string) ([]string, error) {
	if s.env.isCrashed() {
		return nil, errCrashed
	}
	return s.Storage.List(ctx, prefix)
}

func (s *faultyStorage) Delete(ctx context.Context, key string) error {
	if s.env.isCrashed() {
		return errCrashed
	}
	return s.Storage.Delete(ctx, key)
}

func (s *faultyStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	_, _, before, after, crashed := s.env.hooks()
	if crashed {
		return errCrashed
	}
	if before != nil {
		if err := before(entry.Key); err != nil {
			return err
		}
	}
	if err := s.Storage.Put(ctx, entry); err != nil {
		return err
	}
	if after != nil {
		return after(entry.Key)
	}
	return nil
}

// once returns a hook that runs fail on the first call for which match is
// true. Hooks run on whichever goroutine makes the call, hence the atomic.
func once(match func(string) bool, fail func() error) func(string) error {
	var done atomic.Bool
	return func(x string) error {
		if !match(x) || !done.CompareAndSwap(false, true) {
			return nil
		}
		return fail()
	}
}

// always returns a hook that fails every call for which match is true.
func always(match func(string) bool, fail func() error) func(string) error {
	return func(x string) error {
		if !match(x) {
			return nil
		}
		return fail()
	}
}

func (e *rotateEnv) setBeforeNet(h func(string) error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.beforeNet = h
}

func is(want string) func(string) bool { return func(x string) bool { return x == want } }

func injected(what string) func() error {
	return func() error { return errors.New("injected: " + what) }
}

func TestRotateRootReplacesTheSecret(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	shared := e.creds("creds").Data[keyAccessToken]
	original := e.uuidsAtAdobe()

	resp := e.mustOK(e.rotate())

	newUUID, _ := resp.Data[keyClientSecretUUID].(string)
	if got := e.uuidsAtAdobe(); len(got) != 1 || got[0] != newUUID {
		t.Fatalf("Adobe has secrets %v, want only the new one %q", got, newUUID)
	}
	if resp.Data[keyPreviousClientSecretUUID] != original[0] || resp.Data[keyPreviousSecretDeleted] != true {
		t.Errorf("response says previous %v deleted=%v, want %s deleted", resp.Data[keyPreviousClientSecretUUID], resp.Data[keyPreviousSecretDeleted], original[0])
	}
	if _, err := time.Parse(time.RFC3339, resp.Data[keyClientSecretCreatedAt].(string)); err != nil {
		t.Errorf("client_secret_created_at: %v", err)
	}
	if want := e.clock.Now().Format(time.RFC3339); resp.Data[keyLastRotation] != want {
		t.Errorf("last_rotation %v, want %s", resp.Data[keyLastRotation], want)
	}
	if e.emu.SecretAccepted(testClientSecret) {
		t.Error("IMS still accepts the old client secret")
	}
	cfg := e.assertSound("after rotating")
	if cfg.ClientSecretUUID != newUUID || cfg.ClientSecret == testClientSecret {
		t.Errorf("stored uuid %q, want %q, and a new secret", cfg.ClientSecretUUID, newUUID)
	}
	if n := e.walEntries(); n != 0 {
		t.Errorf("%d write-ahead log entries left", n)
	}

	t.Run("the cached shared token is still served", func(t *testing.T) {
		if got := e.creds("creds").Data[keyAccessToken]; got != shared {
			t.Error("creds returns another token after rotation: the cache was dropped")
		}
	})
	t.Run("new tokens are minted with the new secret", func(t *testing.T) {
		e.mustOK(e.write("roles/orgs", map[string]any{"scopes": "openid,AdobeID"}))
		tok := e.creds("creds/orgs").Data[keyAccessToken]
		i := slices.IndexFunc(e.emu.Tokens(), func(it imsemu.IssuedToken) bool { return it.AccessToken == tok })
		if i < 0 || e.emu.Tokens()[i].SecretUUID != newUUID {
			t.Errorf("the role's token was not minted with the new secret %s", newUUID)
		}
	})
	t.Run("config shows the rotation", func(t *testing.T) {
		data := e.mustOK(e.read("config")).Data
		if data[keyClientSecretUUID] != newUUID || data[keyLastRotation] != resp.Data[keyLastRotation] {
			t.Errorf("config shows uuid %v last_rotation %v", data[keyClientSecretUUID], data[keyLastRotation])
		}
		if _, ok := data[keyNextRotation]; ok {
			t.Errorf("next_rotation %v shown while rotation_period is off", data[keyNextRotation])
		}
	})
	t.Run("a second rotation replaces Vault's own secret by uuid", func(t *testing.T) {
		e.clock.Advance(time.Minute)
		second := e.mustOK(e.rotate())
		if second.Data[keyPreviousClientSecretUUID] != newUUID {
			t.Errorf("previous uuid %v, want %s", second.Data[keyPreviousClientSecretUUID], newUUID)
		}
		if got := e.uuidsAtAdobe(); len(got) != 1 || got[0] != second.Data[keyClientSecretUUID] {
			t.Errorf("Adobe has %v after the second rotation", got)
		}
		e.assertSound("after the second rotation")
	})
}

func TestRotateRootNeedsOrgIDAndCredentialID(t *testing.T) {
	cases := []struct {
		name    string
		config  map[string]any
		missing []string
	}{
		{"neither", map[string]any{"org_id": "", "credential_id": ""}, []string{"org_id and credential_id"}},
		{"org_id", map[string]any{"org_id": ""}, []string{"org_id in config"}},
		{"credential_id", map[string]any{"credential_id": ""}, []string{"credential_id in config"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(tc.config)
			tokens := e.emu.Stats().TokenRequests
			resp, err := e.rotate()
			if err != nil {
				t.Fatalf("want a 400 error response, got error %v", err)
			}
			e.mustFail(resp, err, append(tc.missing, "developer.adobe.com/console/projects/{org_id}")...)
			if st := e.emu.Stats(); st.ManagementRequests != 0 || st.TokenRequests != tokens {
				t.Errorf("a refused rotation called Adobe: %+v", st)
			}
		})
	}
}

func TestRotateRootRefusesWhenTheCredentialHasTwoSecrets(t *testing.T) {
	t.Run("before Vault ever rotated", func(t *testing.T) {
		e := newRotateEnv(t, rotateOptions{})
		e.configureForRotation(nil)
		before := e.uuidsAtAdobe()
		extra := e.addSecretAtAdobe()

		resp, err := e.rotate()
		e.mustFail(resp, err, "already has 2 client secrets", before[0], extra, "cannot tell", "Developer Console")
		if got := e.uuidsAtAdobe(); !slices.Equal(got, append(before, extra)) {
			t.Errorf("Adobe's secrets changed from %v to %v", append(before, extra), got)
		}
		if cfg := e.assertSound("after the refusal"); cfg.ClientSecret != testClientSecret {
			t.Error("the stored secret changed")
		}
	})
	t.Run("after a rotation, naming the one Vault holds", func(t *testing.T) {
		e := newRotateEnv(t, rotateOptions{})
		e.configureForRotation(nil)
		held := e.mustOK(e.rotate()).Data[keyClientSecretUUID].(string)
		extra := e.addSecretAtAdobe()

		resp, err := e.rotate()
		e.mustFail(resp, err, "already has 2 client secrets", "Vault holds "+held, extra)
		if got := e.uuidsAtAdobe(); !slices.Equal(got, []string{held, extra}) {
			t.Errorf("Adobe's secrets changed to %v", got)
		}
		e.assertSound("after the refusal")
	})
}

func TestRotateRootWithoutManagementAccess(t *testing.T) {
	t.Run("credential lacks the management scopes", func(t *testing.T) {
		e := newRotateEnv(t, rotateOptions{withoutManagementScopes: true})
		e.configureForRotation(nil)
		resp, err := e.rotate()
		if err != nil {
			t.Fatalf("want a 400 error response, got error %v", err)
		}
		e.mustFail(resp, err, "invalid_scope", "I/O Management API", "Developer Console", "manage_client_secrets", "do not belong in config scopes")
		if e.emu.Stats().ManagementRequests != 0 {
			t.Error("the I/O Management API was called without a token")
		}
		if e.assertSound("after the refusal").ClientSecret != testClientSecret {
			t.Error("the stored secret changed")
		}
	})
	// A refused management token (401, 403) is the operator's to fix in the
	// Developer Console: 400, saying how, and the scope list once. An
	// outage (500) is not: 502, and nothing about access.
	for _, tc := range []struct {
		status int
		want   []string
		access bool
	}{
		{http.StatusUnauthorized, []string{"HTTP 401", "Developer Console", "I/O Management API", "manage_client_secrets", managementScopesNote}, true},
		{http.StatusForbidden, []string{"HTTP 403", "Developer Console", "I/O Management API", "manage_client_secrets", managementScopesNote}, true},
		{http.StatusInternalServerError, []string{"HTTP 500", "unavailable"}, false},
	} {
		t.Run(fmt.Sprintf("the I/O Management API answers %d", tc.status), func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: tc.status, ErrorCode: "refused"})
			resp, err := e.rotate()
			text := ""
			if tc.access {
				if err != nil {
					t.Fatalf("want a 400 error response, got error %v", err)
				}
				e.mustFail(resp, err, tc.want...)
				text = resp.Error().Error()
			} else {
				if err == nil {
					t.Fatalf("want an error (502), got response %#v", resp)
				}
				text = err.Error()
				for _, w := range tc.want {
					if !strings.Contains(text, w) {
						t.Errorf("error %q does not mention %q", text, w)
					}
				}
			}
			scopes := strings.Join(ims.ManagementScopes(), ",")
			if n, want := strings.Count(text, scopes), map[bool]int{true: 1, false: 0}[tc.access]; n != want {
				t.Errorf("the error lists the management scopes %d times, want %d: %s", n, want, text)
			}
			if !tc.access && strings.Contains(text, managementScopesNote) {
				t.Errorf("an outage is explained as missing access: %s", text)
			}
			e.emu.SetFault(nil)
			if got := e.emu.Secrets(); len(got) != 1 || e.assertSound("after the refusal").ClientSecret != testClientSecret {
				t.Errorf("a refused rotation changed something: %d secrets at Adobe", len(got))
			}
		})
	}
}

// TestRotateRootFailureAtEachStep fails each step once in a way the node
// survives, and checks that the secret stored works and Adobe has at most two
// secrets, both right after the request and after Vault's rollback.
func TestRotateRootFailureAtEachStep(t *testing.T) {
	cases := []struct {
		name    string
		inject  func(e *rotateEnv)
		wantErr []string // empty: the rotation succeeds
		warn    string   // a warning the successful rotation carries
		rotated bool     // the stored secret is a new one
		secrets int      // at Adobe right after the request
		wal     int      // entries right after the request
	}{
		{
			name: "create answers 503",
			inject: func(e *rotateEnv) {
				e.afterNet = once(is(opList), func() error {
					e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: 503, Times: 1})
					return nil
				})
			},
			wantErr: []string{"creating a new client secret", "Adobe created no secret", "HTTP 503"},
			secrets: 1,
		},
		{
			name:    "create's answer is lost after Adobe made the secret",
			inject:  func(e *rotateEnv) { e.afterNet = once(is(opCreate), injected("connection reset")) },
			wantErr: []string{"creating a new client secret", "created secret", "anyway; it was deleted"},
			secrets: 1,
		},
		{
			name: "the new secret never mints a token",
			inject: func(e *rotateEnv) {
				e.afterNet = once(is(opCreate), func() error {
					e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_client"})
					return nil
				})
			},
			wantErr: []string{"did not mint a token", "current secret stays in use", "was deleted", "6 attempts", "invalid_client"},
			secrets: 1,
		},
		{
			name: "the new secret works only after a while",
			inject: func(e *rotateEnv) {
				e.afterNet = once(is(opCreate), func() error {
					e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_client", Times: 3})
					return nil
				})
			},
			rotated: true,
			secrets: 1,
		},
		{
			name: "the write-ahead log cannot be written",
			inject: func(e *rotateEnv) {
				e.beforePut = once(func(k string) bool { return strings.HasPrefix(k, "wal/") }, injected("storage unavailable"))
			},
			wantErr: []string{"write-ahead log", "nothing was changed", "storage unavailable"},
			secrets: 1,
		},
		{
			name:    "storing the new secret fails",
			inject:  func(e *rotateEnv) { e.beforePut = once(is(configStorageKey), injected("storage unavailable")) },
			wantErr: []string{"storing the new secret", "was deleted", "storage unavailable"},
			secrets: 1,
		},
		{
			name:    "storing reports a failure but the write landed",
			inject:  func(e *rotateEnv) { e.afterPut = once(is(configStorageKey), injected("storage timeout after commit")) },
			rotated: true,
			secrets: 1,
		},
		{
			name:    "deleting the old secret fails",
			inject:  func(e *rotateEnv) { e.beforeNet = always(is(opDelete), injected("network down")) },
			warn:    "deleting the previous secret",
			rotated: true,
			secrets: 2,
			wal:     1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			e.mu.Lock()
			tc.inject(e)
			e.mu.Unlock()

			resp, err := e.rotate()
			e.emu.SetFault(nil)
			e.clearHooks()
			if len(tc.wantErr) > 0 {
				e.mustFail(resp, err, tc.wantErr...)
			} else {
				e.mustOK(resp, err)
				if tc.warn != "" && (len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], tc.warn)) {
					t.Errorf("warnings %q, want one about %q", resp.Warnings, tc.warn)
				}
			}
			cfg := e.assertSound("after the request")
			if rotated := cfg.ClientSecret != testClientSecret; rotated != tc.rotated {
				t.Errorf("stored secret rotated=%v, want %v", rotated, tc.rotated)
			}
			if n := len(e.emu.Secrets()); n != tc.secrets {
				t.Errorf("%d secrets at Adobe after the request, want %d", n, tc.secrets)
			}
			if n := e.walEntries(); n != tc.wal {
				t.Errorf("%d write-ahead log entries after the request, want %d", n, tc.wal)
			}

			e.rollback()
			cfg = e.assertSound("after the rollback")
			if got := e.uuidsAtAdobe(); len(got) != 1 || (cfg.ClientSecretUUID != "" && got[0] != cfg.ClientSecretUUID) {
				t.Errorf("after the rollback Adobe has %v, want only the stored secret %s", got, cfg.ClientSecretUUID)
			}
			if n := e.walEntries(); n != 0 {
				t.Errorf("%d write-ahead log entries after the rollback", n)
			}
			e.creds("creds")
		})
	}
}

// TestRotateRootCrashAtEachStep stops the node at each step, so that no
// clean-up runs, restarts it on what storage kept, and runs Vault's rollback.
func TestRotateRootCrashAtEachStep(t *testing.T) {
	cases := []struct {
		name    string
		inject  func(e *rotateEnv)
		rotated bool // the stored secret is the new one
		wal     int  // entries left by the crash
		after   int  // secrets at Adobe after the rollback
	}{
		{
			name: "while the write-ahead log entry is written",
			inject: func(e *rotateEnv) {
				e.beforePut = once(func(k string) bool { return strings.HasPrefix(k, "wal/") }, e.crash)
			},
			after: 1,
		},
		{
			name:   "before Adobe is asked for a secret",
			inject: func(e *rotateEnv) { e.beforeNet = once(is(opCreate), e.crash) },
			wal:    1,
			after:  1,
		},
		{
			// The new secret's uuid never reached Vault; the entry, put
			// before the create call, lists the secrets that existed, so the
			// rollback knows the new one all the same.
			name:   "while Adobe creates the secret",
			inject: func(e *rotateEnv) { e.afterNet = once(is(opCreate), e.crash) },
			wal:    1,
			after:  1,
		},
		{
			name: "while the new secret is being verified",
			inject: func(e *rotateEnv) {
				var created atomic.Bool
				e.afterNet = func(op string) error { created.Store(created.Load() || op == opCreate); return nil }
				e.beforeNet = func(op string) error {
					if created.Load() && op == opMint {
						return e.crash()
					}
					return nil
				}
			},
			wal:   1,
			after: 1,
		},
		{
			name:   "while the new secret is being stored",
			inject: func(e *rotateEnv) { e.beforePut = once(is(configStorageKey), e.crash) },
			wal:    1,
			after:  1,
		},
		{
			name:    "right after the new secret was stored",
			inject:  func(e *rotateEnv) { e.afterPut = once(is(configStorageKey), e.crash) },
			rotated: true,
			wal:     1,
			after:   1,
		},
		{
			name:    "before the old secret is deleted",
			inject:  func(e *rotateEnv) { e.beforeNet = once(is(opDelete), e.crash) },
			rotated: true,
			wal:     1,
			after:   1,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			original := e.uuidsAtAdobe()[0]
			e.mu.Lock()
			tc.inject(e)
			e.mu.Unlock()

			_, _ = e.rotate() // a crashed node's answer reaches nobody
			e.restart()

			cfg := e.assertSound("after the crash")
			if rotated := cfg.ClientSecret != testClientSecret; rotated != tc.rotated {
				t.Errorf("stored secret rotated=%v, want %v", rotated, tc.rotated)
			}
			if n := e.walEntries(); n != tc.wal {
				t.Errorf("%d write-ahead log entries after the crash, want %d", n, tc.wal)
			}
			e.creds("creds")

			e.rollback()
			cfg = e.assertSound("after the rollback")
			if n := len(e.emu.Secrets()); n != tc.after {
				t.Errorf("%d secrets at Adobe after the rollback, want %d", n, tc.after)
			}
			if n := e.walEntries(); n != 0 {
				t.Errorf("%d write-ahead log entries after the rollback", n)
			}
			e.creds("creds")

			if !tc.rotated && !slices.Equal(e.uuidsAtAdobe(), []string{original}) {
				t.Errorf("Adobe has %v, want only the original %s", e.uuidsAtAdobe(), original)
			}
			if got := e.uuidsAtAdobe(); cfg.ClientSecretUUID != "" && got[0] != cfg.ClientSecretUUID {
				t.Errorf("Adobe kept %v, not the stored %s", got, cfg.ClientSecretUUID)
			}
			e.mustOK(e.rotate())
			e.assertSound("after rotating again")
		})
	}
}

// TestRotateRootFinishesAnEarlierRotation shows the next rotation deleting
// the secret an earlier one replaced but could not delete, without waiting
// for Vault's rollback.
func TestRotateRootFinishesAnEarlierRotation(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.setBeforeNet(always(is(opDelete), injected("network down")))
	e.mustOK(e.rotate())
	e.clearHooks()
	if n := len(e.emu.Secrets()); n != 2 {
		t.Fatalf("%d secrets at Adobe, want the new and the undeleted old", n)
	}

	logged := len(e.logs.String()) // the first rotation's warnings about the delete
	e.mustOK(e.rotate())
	e.assertSettled("after the next rotation")
	second := e.logs.String()[logged:]
	if !strings.Contains(second, "deleted the secret an earlier rotation replaced") || strings.Contains(second, "[WARN]") {
		t.Errorf("the second rotation's log should show the earlier secret deleted, and no warning:\n%s", second)
	}
}

func TestRotateRollbackWhenTheConfigIsGone(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.mu.Lock()
	e.beforePut = once(is(configStorageKey), e.crash)
	e.mu.Unlock()
	_, _ = e.rotate()
	e.restart()
	e.mustOK(e.request(logical.DeleteOperation, "config", nil))

	e.rollback()
	if n := e.walEntries(); n != 0 {
		t.Errorf("%d write-ahead log entries kept, though nothing can be done with them", n)
	}
	if !strings.Contains(e.logs.String(), "check the credential's secrets in the Adobe Developer Console") {
		t.Error("the log does not tell the operator to delete the leftover secret")
	}
}

func TestRotateRollbackDropsEntriesItCannotUse(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	ctx := context.Background()
	for _, w := range []struct {
		kind string
		data any
	}{
		{"some-other-kind", map[string]any{"x": "y"}},
		{walKindRotateRoot, "not an object"},
	} {
		if _, err := framework.PutWAL(ctx, e.mem, w.kind, w.data); err != nil {
			t.Fatal(err)
		}
	}
	e.rollback()
	if n := e.walEntries(); n != 0 {
		t.Errorf("%d unusable write-ahead log entries kept; they would be retried forever", n)
	}
	if e.emu.Stats().ManagementRequests != 0 {
		t.Error("an unusable entry led to a call to Adobe")
	}
}

// TestRotateRootConcurrentRequests: Adobe's two-secret limit and the re-read
// before storing keep concurrent rotations from leaving more than one secret.
func TestRotateRootConcurrentRequests(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)

	var wg sync.WaitGroup
	results := make([]error, 4)
	for i := range results {
		wg.Go(func() {
			req := &logical.Request{Operation: logical.UpdateOperation, Path: "config/rotate-root", Storage: e.storage}
			resp, err := e.b.HandleRequest(context.Background(), req)
			e.assertNoRotatedSecretsIn("response to a concurrent rotation", dump(resp, err))
			if err == nil && resp.IsError() {
				err = resp.Error()
			}
			results[i] = err
		})
	}
	wg.Wait()
	if !slices.Contains(results, nil) {
		t.Fatalf("no rotation succeeded: %v", results)
	}
	e.assertSettled("after concurrent rotations")
}

func TestRotateRootStoresNothingWhenTheCredentialChangedMeanwhile(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.mu.Lock()
	e.afterNet = once(is(opCreate), func() error {
		// An operator points the config at another credential meanwhile.
		cfg := e.stored()
		cfg.ClientID = "another-client"
		cfg.ClientSecret = "another-credential-secret"
		return putConfig(context.Background(), e.mem, cfg)
	})
	e.mu.Unlock()
	resp, err := e.rotate()
	e.mustFail(resp, err, "changed while its secret was being rotated", "was deleted")
	if got := e.emu.Secrets(); len(got) != 1 {
		t.Errorf("%d secrets at Adobe, want the original only", len(got))
	}
	if cfg := e.stored(); cfg.ClientID != "another-client" {
		t.Errorf("the operator's config was overwritten: client_id %q", cfg.ClientID)
	}
}

func TestConfigWriteOfAnotherSecretForgetsItsUUID(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.mustOK(e.rotate())
	if e.stored().ClientSecretUUID == "" {
		t.Fatal("no uuid stored after rotating")
	}
	// Writing the same secret keeps knowing which it is.
	e.mustOK(e.write("config", map[string]any{"client_secret": e.stored().ClientSecret}))
	if e.stored().ClientSecretUUID == "" {
		t.Error("writing the stored secret again forgot its uuid")
	}
	// A person adds a secret in the Developer Console and writes it to Vault.
	e.addSecretAtAdobe()
	all := e.allSecrets()
	e.mustOK(e.write("config", map[string]any{"client_secret": all[len(all)-1]}))
	if _, ok := e.mustOK(e.read("config")).Data[keyClientSecretUUID]; ok {
		t.Error("config still names a uuid for a secret Vault did not create")
	}
	resp, err := e.rotate()
	e.mustFail(resp, err, "already has 2 client secrets", "cannot tell")
}

func TestConfigRotationPeriod(t *testing.T) {
	cases := []struct {
		name    string
		data    map[string]any
		wantErr []string
		warn    bool
	}{
		{"below the minimum", map[string]any{keyRotationPeriod: "5s"}, []string{"rotation_period 5s", "minimum of 10s"}, false},
		{"negative", map[string]any{keyRotationPeriod: "-60"}, []string{"negative"}, false},
		{"without org_id", map[string]any{keyRotationPeriod: "30d", keyOrgID: ""}, []string{"automated rotation is on", "org_id"}, false},
		{"short, for tests", map[string]any{keyRotationPeriod: "30s"}, nil, true},
		{"days", map[string]any{keyRotationPeriod: "30d"}, nil, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			resp, err := e.write("config", tc.data)
			if len(tc.wantErr) > 0 {
				e.mustFail(resp, err, tc.wantErr...)
				if e.stored().RotationPeriod != 0 {
					t.Error("a refused rotation_period was stored")
				}
				return
			}
			e.mustOK(resp, err)
			if got := resp != nil && len(resp.Warnings) > 0; got != tc.warn {
				t.Errorf("warned=%v (%v), want %v", got, resp, tc.warn)
			}
		})
	}

	t.Run("0 turns it off", func(t *testing.T) {
		e := newRotateEnv(t, rotateOptions{})
		e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
		e.mustOK(e.write("config", map[string]any{keyRotationPeriod: 0}))
		data := e.mustOK(e.read("config")).Data
		for _, k := range []string{keyRotationPeriod, keyNextRotation} {
			if _, ok := data[k]; ok {
				t.Errorf("config shows %s=%v with rotation off", k, data[k])
			}
		}
		e.clock.Advance(48 * time.Hour)
		if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil || e.emu.Stats().ManagementRequests != 0 {
			t.Errorf("rotation ran while off: %v", err)
		}
	})
}

// TestRotateOnSchedule drives rotation_period with the fake clock: rotateIfDue
// is what Vault's periodic call runs about once a minute.
func TestRotateOnSchedule(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	ctx := context.Background()
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	start := e.clock.Now()

	data := e.mustOK(e.read("config")).Data
	if data[keyRotationPeriod] != int64(3600) || data[keyNextRotation] != start.Add(time.Hour).Format(time.RFC3339) {
		t.Fatalf("config shows rotation_period %v next_rotation %v", data[keyRotationPeriod], data[keyNextRotation])
	}
	if _, ok := data[keyLastRotation]; ok {
		t.Errorf("last_rotation %v shown before any rotation", data[keyLastRotation])
	}

	t.Run("not before it is due", func(t *testing.T) {
		for _, step := range []time.Duration{0, 59 * time.Minute} {
			e.clock.Advance(step)
			if err := e.b.rotateIfDue(ctx, e.storage); err != nil {
				t.Fatal(err)
			}
		}
		if n := e.emu.Stats().ManagementRequests; n != 0 || e.stored().ClientSecret != testClientSecret {
			t.Fatalf("rotated early (%d management requests)", n)
		}
	})
	t.Run("when due", func(t *testing.T) {
		e.clock.Advance(2 * time.Minute)
		if err := e.b.rotateIfDue(ctx, e.storage); err != nil {
			t.Fatal(err)
		}
		cfg := e.assertSound("after the scheduled rotation")
		if cfg.ClientSecret == testClientSecret || e.emu.SecretAccepted(testClientSecret) || len(e.emu.Secrets()) != 1 {
			t.Fatal("the scheduled rotation did not replace the secret")
		}
		data := e.mustOK(e.read("config")).Data
		now := e.clock.Now()
		if data[keyLastRotation] != now.Format(time.RFC3339) || data[keyNextRotation] != now.Add(time.Hour).Format(time.RFC3339) {
			t.Errorf("last_rotation %v next_rotation %v, want %s and an hour later", data[keyLastRotation], data[keyNextRotation], now.Format(time.RFC3339))
		}
	})
	t.Run("a failure backs off, and success clears it", func(t *testing.T) {
		e.clock.Advance(time.Hour)
		e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: 503})
		err := e.b.rotateIfDue(ctx, e.storage)
		if err == nil || !strings.Contains(err.Error(), "automatic rotation") {
			t.Fatalf("rotateIfDue = %v, want the failure", err)
		}
		failedAt := e.clock.Now()
		data := e.mustOK(e.read("config")).Data
		if msg, _ := data[keyLastRotationError].(string); !strings.Contains(msg, "HTTP 503") {
			t.Errorf("last_rotation_error %q", msg)
		}
		if data[keyNextRotation] != failedAt.Add(time.Minute).Format(time.RFC3339) {
			t.Errorf("next_rotation %v, want a minute after the failure", data[keyNextRotation])
		}

		calls := e.emu.Stats().ManagementRequests
		e.clock.Advance(30 * time.Second)
		if err := e.b.rotateIfDue(ctx, e.storage); err != nil || e.emu.Stats().ManagementRequests != calls {
			t.Errorf("retried during the back-off: %v", err)
		}

		e.emu.SetFault(nil)
		e.clock.Advance(30 * time.Second)
		if err := e.b.rotateIfDue(ctx, e.storage); err != nil {
			t.Fatal(err)
		}
		data = e.mustOK(e.read("config")).Data
		if _, ok := data[keyLastRotationError]; ok || data[keyLastRotation] != e.clock.Now().Format(time.RFC3339) {
			t.Errorf("after the retry: last_rotation %v, last_rotation_error %v", data[keyLastRotation], data[keyLastRotationError])
		}
		e.assertSound("after the retry")
	})
	t.Run("turning the schedule on later starts it then", func(t *testing.T) {
		e.mustOK(e.write("config", map[string]any{keyRotationPeriod: 0}))
		e.clock.Advance(3 * time.Hour)
		e.mustOK(e.write("config", map[string]any{keyRotationPeriod: "1h"}))
		want := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
		if got := e.mustOK(e.read("config")).Data[keyNextRotation]; got != want {
			t.Errorf("next_rotation %v, want %s: a period after turning it on", got, want)
		}
	})
	t.Run("a manual rotation restarts the schedule", func(t *testing.T) {
		e.clock.Advance(20 * time.Minute)
		want := e.clock.Now().Add(time.Hour).Format(time.RFC3339)
		if got := e.mustOK(e.rotate()).Data[keyNextRotation]; got != want {
			t.Errorf("rotate-root says next_rotation %v, want %s", got, want)
		}
		e.clock.Advance(59 * time.Minute)
		calls := e.emu.Stats().ManagementRequests
		if err := e.b.rotateIfDue(ctx, e.storage); err != nil || e.emu.Stats().ManagementRequests != calls {
			t.Errorf("rotated again before a period passed: %v", err)
		}
	})
}

func TestRotateRootTakesNoFields(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	resp, err := e.request(logical.UpdateOperation, "config/rotate-root", map[string]any{"rotation_period": "1h"})
	e.mustFail(resp, err, "takes no fields")
	if e.emu.Stats().ManagementRequests != 0 {
		t.Error("rotated anyway")
	}
}

func TestRotateRootOperationNames(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	var p *framework.Path
	for _, path := range e.b.Paths {
		if path.Pattern == "config/rotate-root" {
			p = path
		}
	}
	if p == nil {
		t.Fatal("no config/rotate-root path")
	}
	op := p.Operations[logical.UpdateOperation].(*framework.PathOperation)
	if p.DisplayAttrs.OperationPrefix != "adobe-ims" || op.DisplayAttrs.OperationVerb != "rotate" || op.DisplayAttrs.OperationSuffix != "root-credentials" {
		t.Errorf("display attrs %+v %+v", p.DisplayAttrs, op.DisplayAttrs)
	}
	if !op.ForwardPerformanceStandby || !op.ForwardPerformanceSecondary {
		t.Error("rotate-root is not forwarded to the active node")
	}
	if len(p.Operations) != 1 {
		t.Errorf("rotate-root has %d operations, want update only", len(p.Operations))
	}
}
