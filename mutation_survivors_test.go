package adobeims

// Tests for behaviour that a mutation-testing run (gremlins) showed no other
// test pinned down: each fails when the condition it covers is negated or
// has its boundary moved.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

// hookedStorage wraps the storage requests see: it counts the reads of each
// key, can run a hook after a read has fetched its entry (to land a write
// between a read and its use), and can refuse reads and deletions of chosen
// keys.
type hookedStorage struct {
	logical.Storage

	mu         sync.Mutex
	gets       map[string]int
	afterGet   func(key string)       // runs once per read, outside mu
	failGet    func(key string) error // non-nil error: the read is refused
	failDelete func(key string) error // non-nil error: the delete is refused
}

func (s *hookedStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.mu.Lock()
	fail := s.failGet
	s.mu.Unlock()
	if fail != nil {
		if err := fail(key); err != nil {
			return nil, err
		}
	}
	entry, err := s.Storage.Get(ctx, key)
	s.mu.Lock()
	if s.gets == nil {
		s.gets = map[string]int{}
	}
	s.gets[key]++
	after := s.afterGet
	s.mu.Unlock()
	if after != nil {
		after(key)
	}
	return entry, err
}

func (s *hookedStorage) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	fail := s.failDelete
	s.mu.Unlock()
	if fail != nil {
		if err := fail(key); err != nil {
			return err
		}
	}
	return s.Storage.Delete(ctx, key)
}

func (s *hookedStorage) getsOf(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[key]
}

func (s *hookedStorage) setAfterGet(h func(key string)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.afterGet = h
}

func (s *hookedStorage) setFailGet(h func(key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failGet = h
}

func (s *hookedStorage) setFailDelete(h func(key string) error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failDelete = h
}

// hookStorage puts a hookedStorage between the env's requests and its
// storage. The backend's own view (Invalidate, persisted tokens) stays the
// storage underneath, which the wrapper reads and writes too.
func (e *testEnv) hookStorage() *hookedStorage {
	s := &hookedStorage{Storage: e.storage}
	e.storage = s
	return s
}

// throttleCredential makes IMS answer one token request with a 429 and a
// Retry-After of 20 seconds, through a read of a scope set with no cached
// token, and returns what info then shows as throttled_until.
func (e *testEnv) throttleCredential(path string) string {
	e.t.Helper()
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: http.StatusTooManyRequests, RetryAfter: "20", Times: 1})
	resp, err := e.read(path)
	e.mustFail(resp, err, "throttling this credential")
	shown, _ := e.mustOK(e.read("info")).Data[keyThrottledUntil].(string)
	if shown == "" {
		e.t.Fatal("info shows no throttled_until after IMS throttled the credential")
	}
	return shown
}

// TestConfigChangeKeepsTheIMSThrottleUnlessClientOrIMSURLChanges: IMS
// throttles a client at a host. A config change that keeps both (a new
// secret) keeps the throttle, so that no token request is sent before IMS
// allows it; a change of client_id or ims_url is another client or another
// host, which starts afresh. The node that writes the config and a node that
// learns of it through Invalidate do the same.
func TestConfigChangeKeepsTheIMSThrottleUnlessClientOrIMSURLChanges(t *testing.T) {
	cases := []struct {
		name  string
		write func(otherIMS string) map[string]any
		edit  func(c *config, otherIMS string)
		keeps bool
	}{
		{
			name: "client_secret only",
			write: func(string) map[string]any {
				return map[string]any{"client_secret": "another-secret-of-the-same-client", "verify": false}
			},
			edit:  func(c *config, _ string) { c.ClientSecret = "another-secret-of-the-same-client" },
			keeps: true,
		},
		{
			name: "client_id",
			write: func(string) map[string]any {
				return map[string]any{"client_id": "another-client", "client_secret": "another-client-secret", "verify": false}
			},
			edit: func(c *config, _ string) { c.ClientID, c.ClientSecret = "another-client", "another-client-secret" },
		},
		{
			name: "ims_url",
			write: func(otherIMS string) map[string]any {
				return map[string]any{"ims_url": otherIMS, "client_secret": testClientSecret, "verify": false}
			},
			edit: func(c *config, otherIMS string) { c.IMSURL = otherIMS },
		},
	}
	for _, tc := range cases {
		for _, where := range []string{"this node", "another node"} {
			t.Run(tc.name+"/"+where, func(t *testing.T) {
				e := newTestEnv(t)
				// The same IMS at another address: a different ims_url whose
				// requests the emulator still counts.
				other := httptest.NewServer(e.emu)
				t.Cleanup(other.Close)
				e.configure(nil)
				e.mustOK(e.write("roles/cold", map[string]any{"scopes": "openid,firefly_api"}))
				throttled := e.throttleCredential("creds/cold")

				if where == "this node" {
					e.mustOK(e.write("config", tc.write(other.URL)))
				} else {
					e.changeStoredConfig(func(c *config) { tc.edit(c, other.URL) })
					e.b.invalidate(t.Context(), configStorageKey)
				}

				shown := e.mustOK(e.read("info")).Data[keyThrottledUntil]
				requests := e.emu.Stats().TokenRequests
				resp, err := e.read("creds/cold")
				sent := e.emu.Stats().TokenRequests - requests
				if tc.keeps {
					if shown != throttled {
						t.Errorf("info throttled_until %q after the change, want %q still", shown, throttled)
					}
					e.mustFail(resp, err, "throttling this credential")
					if sent != 0 {
						t.Errorf("%d token requests left the plugin while IMS still throttles the client", sent)
					}
					return
				}
				if shown != "" {
					t.Errorf("info throttled_until %q after the change, want none: the throttle was another client's or host's", shown)
				}
				if sent == 0 {
					t.Errorf("no token request was sent after the change: the old throttle still holds (read: %v %v)", dump(resp, nil), err)
				}
				if err != nil && strings.Contains(err.Error(), "throttling this credential") {
					t.Errorf("the read after the change was refused as throttled: %v", err)
				}
			})
		}
	}
}

// TestPeriodicRotatesOnlyWhereStorageMayBeWritten: a rotation that is due
// is not run by the periodic function of a performance standby or a
// performance secondary, whose storage writes Vault refuses (the management
// API sees nothing); once the node is active, the same periodic call rotates.
func TestPeriodicRotatesOnlyWhereStorageMayBeWritten(t *testing.T) {
	for _, tc := range nodesThatDoNotWrite() {
		t.Run(tc.name, func(t *testing.T) {
			sys := logical.TestSystemView()
			e := newRotateEnv(t, rotateOptions{system: sys})
			e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
			e.clock.Advance(61 * time.Minute)

			sys.ReplicationStateVal = tc.state
			if err := e.periodic(); err != nil {
				t.Fatalf("periodic on a %s: %v", tc.name, err)
			}
			if n := e.emu.Stats().ManagementRequests; n != 0 || e.stored().ClientSecret != testClientSecret {
				t.Fatalf("the periodic call of a %s rotated the secret (%d management requests)", tc.name, n)
			}

			sys.ReplicationStateVal = 0 // the node is now the active one
			if err := e.periodic(); err != nil {
				t.Fatalf("periodic on the active node: %v", err)
			}
			if n := e.emu.Stats().ManagementRequests; n == 0 || e.stored().ClientSecret == testClientSecret {
				t.Fatalf("the periodic call of the active node did not rotate a due secret (%d management requests)", n)
			}
			e.assertSound("after the scheduled rotation")
		})
	}
}

// TestShortRotationPeriodWarnsOnlyBelowTheAdvisedMinimumWhenItChanges: a
// config write that sets rotation_period below advisedMinRotationPeriod
// warns once; exactly the advised minimum, no period at all, turning it off,
// and a write that keeps the same short period do not warn.
func TestShortRotationPeriodWarnsOnlyBelowTheAdvisedMinimumWhenItChanges(t *testing.T) {
	justBelow := advisedMinRotationPeriod - time.Second
	seconds := func(d time.Duration) int { return int(d / time.Second) }
	data := func(e *testEnv, extra map[string]any) map[string]any {
		d := map[string]any{
			"client_id": testClientID, "client_secret": testClientSecret, "scopes": testScopes, "ims_url": e.srv.URL,
			keyOrgID: "ORG@AdobeOrg", keyCredentialID: "cred1", "verify": false,
		}
		for k, v := range extra {
			d[k] = v
		}
		return d
	}
	warnings := func(t *testing.T, e *testEnv, resp *logical.Response, err error) []string {
		t.Helper()
		e.mustOK(resp, err)
		if resp == nil {
			return nil
		}
		return resp.Warnings
	}
	wantWarning := fmt.Sprintf("rotation_period %s is shorter than %s", justBelow, advisedMinRotationPeriod)

	t.Run("changes of an existing config", func(t *testing.T) {
		e := newTestEnv(t)
		resp, err := e.write("config", data(e, nil))
		if w := warnings(t, e, resp, err); len(w) != 0 {
			t.Errorf("creating a config without rotation warned: %q", w)
		}

		resp, err = e.write("config", map[string]any{keyRotationPeriod: seconds(justBelow)})
		if w := warnings(t, e, resp, err); len(w) != 1 || !strings.Contains(w[0], wantWarning) {
			t.Errorf("setting rotation_period %s warned %q, want one warning %q", justBelow, w, wantWarning)
		}

		resp, err = e.write("config", map[string]any{keyRotationPeriod: seconds(justBelow)})
		if w := warnings(t, e, resp, err); len(w) != 0 {
			t.Errorf("writing the same short rotation_period again warned again: %q", w)
		}
		resp, err = e.write("config", map[string]any{keyMaxConcurrent: 3})
		if w := warnings(t, e, resp, err); len(w) != 0 {
			t.Errorf("a write that keeps the short rotation_period warned again: %q", w)
		}

		resp, err = e.write("config", map[string]any{keyRotationPeriod: seconds(advisedMinRotationPeriod)})
		if w := warnings(t, e, resp, err); len(w) != 0 {
			t.Errorf("rotation_period of exactly %s warned: %q", advisedMinRotationPeriod, w)
		}

		resp, err = e.write("config", map[string]any{keyRotationPeriod: 0})
		if w := warnings(t, e, resp, err); len(w) != 0 {
			t.Errorf("turning rotation off warned: %q", w)
		}
		if got := e.mustOK(e.read("config")).Data[keyRotationDriver]; got != driverNone {
			t.Fatalf("rotation_driver %v after rotation_period 0, want %s", got, driverNone)
		}
	})

	t.Run("creating a config", func(t *testing.T) {
		e := newTestEnv(t)
		resp, err := e.write("config", data(e, map[string]any{keyRotationPeriod: seconds(justBelow)}))
		if w := warnings(t, e, resp, err); len(w) != 1 || !strings.Contains(w[0], wantWarning) {
			t.Errorf("creating a config with rotation_period %s warned %q, want one warning %q", justBelow, w, wantWarning)
		}
	})
}

// TestConfigClientIDChangeClearsLastRotationButSecretChangeKeepsIt: the last
// rotation a config read shows belongs to the client it rotated; writing
// another secret of the same client keeps it, moving to another client_id
// clears it.
func TestConfigClientIDChangeClearsLastRotationButSecretChangeKeepsIt(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.mustOK(e.rotate())
	rotated, _ := e.mustOK(e.read("config")).Data[keyLastRotation].(string)
	if rotated == "" {
		t.Fatal("config shows no last_rotation after a rotation")
	}

	e.clock.Advance(time.Minute)
	e.mustOK(e.write("config", map[string]any{"client_secret": "another-secret-of-the-same-client", "verify": false}))
	if got := e.mustOK(e.read("config")).Data[keyLastRotation]; got != rotated {
		t.Errorf("after a secret-only write, last_rotation is %v, want %s still", got, rotated)
	}

	e.mustOK(e.write("config", map[string]any{"client_id": "another-client", "client_secret": "another-client-secret", "verify": false}))
	data := e.mustOK(e.read("config")).Data
	if got, ok := data[keyLastRotation]; ok {
		t.Errorf("after moving to another client_id, config shows last_rotation %v of the old client", got)
	}
	if got := data[keyLastVaultRotation]; got != nil {
		t.Errorf("after moving to another client_id, config shows last_vault_rotation %v of the old client", got)
	}
}

// TestMaxConcurrentIMSRequestsAcceptsBothBounds: 1 and 64, the ends of the
// documented range, are accepted, shown on read and applied to the gate.
func TestMaxConcurrentIMSRequestsAcceptsBothBounds(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	for _, n := range []int{imsgate.MinLimit, imsgate.MaxLimit} {
		e.mustOK(e.write("config", map[string]any{keyMaxConcurrent: n}))
		if got := e.mustOK(e.read("config")).Data[keyMaxConcurrent]; got != n {
			t.Errorf("config shows max_concurrent_ims_requests %v, want %d", got, n)
		}
		if got := e.b.gate.Limit(); got != n {
			t.Errorf("the gate's limit is %d, want %d", got, n)
		}
	}
}

// TestExistenceChecksTellCreateFromUpdate: Vault asks the existence check
// whether a write creates or updates, and requires the policy's "create" or
// "update" capability accordingly. config and roles/<name> exist exactly
// when they are stored.
func TestExistenceChecksTellCreateFromUpdate(t *testing.T) {
	e := newTestEnv(t)
	exists := func(path string) bool {
		t.Helper()
		req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Storage: e.storage}
		found, ok, err := e.b.HandleExistenceCheck(t.Context(), req)
		if err != nil || !found {
			t.Fatalf("existence check of %s: found=%v err=%v", path, found, err)
		}
		return ok
	}
	if exists("config") {
		t.Error("config exists before it was written: a policy with only create could not write it")
	}
	e.configure(nil)
	if !exists("config") {
		t.Error("config does not exist after it was written: a policy with only update could not change it")
	}
	if exists("roles/r") {
		t.Error("role r exists before it was written")
	}
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	if !exists("roles/r") {
		t.Error("role r does not exist after it was written")
	}
	if exists("roles/other") {
		t.Error("role other exists although only r was written")
	}
	e.mustOK(e.request(logical.DeleteOperation, "roles/r", nil))
	if exists("roles/r") {
		t.Error("role r exists after it was deleted")
	}
	e.mustOK(e.request(logical.DeleteOperation, "config", nil))
	if exists("config") {
		t.Error("config exists after it was deleted")
	}
}

// TestConfigDeleteLeavesNoTokensOrRotationStatusBehind: deleting the config
// deletes every persisted shared token and the record of failed automatic
// rotations, so that a config written later starts clean.
func TestConfigDeleteLeavesNoTokensOrRotationStatusBehind(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	e.creds("creds")
	e.creds("creds/r")
	if n := len(e.storedTokens()); n != 2 {
		t.Fatalf("%d shared tokens stored, want 2", n)
	}
	e.clock.Advance(61 * time.Minute)
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: 503})
	if err := e.b.rotateIfDue(t.Context(), e.storage); err == nil {
		t.Fatal("the scheduled rotation did not fail")
	}
	e.emu.SetFault(nil)
	if entry, err := e.mem.Get(t.Context(), rotationStatusStorageKey); err != nil || entry == nil {
		t.Fatalf("no rotation status stored after a failed rotation: %v", err)
	}

	e.mustOK(e.request(logical.DeleteOperation, "config", nil))
	if keys := e.storedTokens(); len(keys) != 0 {
		t.Errorf("shared tokens still stored after the config was deleted: %v", keys)
	}
	if entry, err := e.mem.Get(t.Context(), rotationStatusStorageKey); err != nil || entry != nil {
		t.Errorf("the rotation status is still stored after the config was deleted (err %v)", err)
	}
}

// TestConfigDeleteReportsAFailureToDeleteTokensOrRotationStatus: when
// storage refuses to delete a persisted token or the rotation status, the
// config delete says so instead of reporting success.
func TestConfigDeleteReportsAFailureToDeleteTokensOrRotationStatus(t *testing.T) {
	for _, tc := range []struct {
		name string
		key  func(string) bool
		want string
	}{
		{"a persisted token", func(k string) bool { return strings.HasPrefix(k, tokensStoragePrefix) }, "deleting a stored shared token"},
		{"the rotation status", func(k string) bool { return k == rotationStatusStorageKey }, "deleting the rotation status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			e.configure(nil)
			e.creds("creds")
			s := e.hookStorage()
			if keys, err := s.List(t.Context(), tokensStoragePrefix); err != nil || len(keys) != 1 {
				t.Fatalf("stored shared tokens %v (%v), want one", keys, err)
			}
			s.setFailDelete(func(key string) error {
				if tc.key(key) {
					return errors.New("injected: storage refuses to delete " + key)
				}
				return nil
			})
			resp, err := e.request(logical.DeleteOperation, "config", nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "injected") {
				t.Fatalf("config delete with storage refusing to delete %s = %v, %v; want an error %q", tc.name, dump(resp, nil), err, tc.want)
			}
		})
	}
}

// TestRoleAcceptsZeroAndEqualTTLs: 0 means no cap for ttl and max_ttl, so 0
// is accepted for either alongside any value of the other, and ttl may
// equal max_ttl; only a ttl longer than a non-zero max_ttl is refused.
func TestRoleAcceptsZeroAndEqualTTLs(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	for i, tc := range []struct {
		ttl, maxTTL any
		want        [2]int64
	}{
		{0, 0, [2]int64{0, 0}},
		{"1h", "1h", [2]int64{3600, 3600}},
		{"1h", 0, [2]int64{3600, 0}},
		{0, "1h", [2]int64{0, 3600}},
	} {
		path := fmt.Sprintf("roles/r%d", i)
		e.mustOK(e.write(path, map[string]any{"scopes": "openid", keyTTL: tc.ttl, keyMaxTTL: tc.maxTTL}))
		got := e.mustOK(e.read(path)).Data
		if got[keyTTL] != tc.want[0] || got[keyMaxTTL] != tc.want[1] {
			t.Errorf("ttl=%v max_ttl=%v stored as ttl %v max_ttl %v, want %v", tc.ttl, tc.maxTTL, got[keyTTL], got[keyMaxTTL], tc.want)
		}
	}
	resp, err := e.write("roles/long", map[string]any{"scopes": "openid", keyTTL: "1h1s", keyMaxTTL: "1h"})
	e.mustFail(resp, err, "longer than max_ttl")
}

// TestRoleWriteDropsOnlyTheTokenOfScopesItNoLongerUses: changing a role's
// scopes drops the cached token of its old scope set; a write that keeps
// the scopes, and creating another role, keep it (and serve it without
// asking IMS); deleting the role drops the token of its scopes.
func TestRoleWriteDropsOnlyTheTokenOfScopesItNoLongerUses(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	cached := func(scopes ...string) bool {
		key := tokencache.Key(scopes)
		for _, s := range e.b.cache.States() {
			if s.Scopes == key && !s.MintedAt.IsZero() {
				return true
			}
		}
		return false
	}
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	first := e.creds("creds/r").Data[keyAccessToken]
	if !cached("openid") {
		t.Fatal("the role's token is not cached after a read")
	}
	requests := e.emu.Stats().TokenRequests

	e.mustOK(e.write("roles/r", map[string]any{keyTTL: "30m"}))
	if !cached("openid") {
		t.Error("a role write that kept its scopes dropped their token")
	}
	e.mustOK(e.write("roles/other", map[string]any{"scopes": "AdobeID"}))
	if !cached("openid") {
		t.Error("creating another role dropped the token of role r's scopes")
	}
	if got := e.creds("creds/r").Data[keyAccessToken]; got != first {
		t.Error("role r's token was not served after writes that kept its scopes")
	}
	if n := e.emu.Stats().TokenRequests - requests; n != 0 {
		t.Errorf("%d token requests after writes that kept role r's scopes, want 0", n)
	}

	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid,AdobeID"}))
	if cached("openid") {
		t.Error("the token of role r's old scope set is still cached after its scopes changed")
	}
	e.creds("creds/r")
	if !cached("openid", "AdobeID") {
		t.Fatal("the token of role r's new scopes is not cached after a read")
	}
	e.mustOK(e.request(logical.DeleteOperation, "roles/r", nil))
	if cached("openid", "AdobeID") {
		t.Error("the token of a deleted role's scopes is still cached")
	}
}

// TestConfigScopeChangeNamesOnlyTheRolesItWouldBreak: a scope change that
// leaves every role's scopes in the config is saved; one that does not is
// refused, naming each role that needs a missing scope with exactly the
// scopes it misses, and no role that would stay intact.
func TestConfigScopeChangeNamesOnlyTheRolesItWouldBreak(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/intact", map[string]any{"scopes": "openid"}))
	e.mustOK(e.write("roles/ff", map[string]any{"scopes": "openid,firefly_api"}))
	e.mustOK(e.write("roles/both", map[string]any{"scopes": "ff_apis,firefly_api"}))

	e.mustOK(e.write("config", map[string]any{"scopes": "openid,firefly_api,ff_apis"}))
	if got := e.mustOK(e.read("config")).Data[keyScopes]; !reflect.DeepEqual(got, []string{"openid", "firefly_api", "ff_apis"}) {
		t.Fatalf("a scope change every role fits was not saved: scopes %v", got)
	}

	resp, err := e.write("config", map[string]any{"scopes": "openid,ff_apis"})
	msg := e.mustFail(resp, err, "ff (needs firefly_api)", "both (needs firefly_api)")
	for _, notWanted := range []string{"intact", "needs ff_apis", "needs openid", "both (needs ff_apis"} {
		if strings.Contains(msg, notWanted) {
			t.Errorf("the refusal %q names %q, which the change leaves intact", msg, notWanted)
		}
	}
	resp, err = e.write("config", map[string]any{"scopes": "AdobeID"})
	e.mustFail(resp, err, "intact (needs openid)", "ff (needs openid,firefly_api)", "both (needs ff_apis,firefly_api)")
}

// TestScopesLabelIsCutOnlyBeyondItsLimit: a scope-set key of exactly
// maxScopesLabel bytes is the scopes label as it is; one byte more is cut
// to maxScopesLabel bytes ending in "...".
func TestScopesLabelIsCutOnlyBeyondItsLimit(t *testing.T) {
	exact := strings.Repeat("s", maxScopesLabel)
	if got := scopeSetLabels(exact)[1]; got != exact {
		t.Errorf("a %d-byte key is labelled %q, want it whole", len(exact), got)
	}
	over := exact + "t"
	want := exact[:maxScopesLabel-3] + "..."
	if got := scopeSetLabels(over)[1]; got != want {
		t.Errorf("a %d-byte key is labelled %q, want %q", len(over), got, want)
	}
}

// TestCredsReadsServeTheRoleFromMemoryAfterTheFirst: the read path keeps
// decoded roles in memory, so that a creds read does not cost a storage
// read of its role every time: of two reads, only the first reads it.
func TestCredsReadsServeTheRoleFromMemoryAfterTheFirst(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid", keyTTL: "1h"}))
	s := e.hookStorage()
	e.creds("creds/r")
	if n := s.getsOf(rolesStoragePrefix + "r"); n != 1 {
		t.Fatalf("the first creds read read role r from storage %d times, want 1", n)
	}
	e.creds("creds/r")
	if n := s.getsOf(rolesStoragePrefix + "r"); n != 1 {
		t.Errorf("the second creds read read role r from storage again (%d reads in all): the role was not kept in memory", n)
	}
}

// TestRoleWriteRacingACredsReadIsNotCachedStale: a role write that lands
// while a creds read has fetched the old role from storage but not yet
// cached it: that read may use the old role once, but the next read uses
// the new one, not a cached copy of the old.
func TestRoleWriteRacingACredsReadIsNotCachedStale(t *testing.T) {
	e := newTestEnv(t)
	e.configure(nil)
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid", keyTTL: "1h"}))
	s := e.hookStorage()
	var once sync.Once
	wrote := false
	s.setAfterGet(func(key string) {
		if key != rolesStoragePrefix+"r" {
			return
		}
		once.Do(func() {
			// The read has the old role in hand; the write lands now.
			s.setAfterGet(nil)
			e.mustOK(e.write("roles/r", map[string]any{keyTTL: "10m"}))
			wrote = true
		})
	})
	if got := e.creds("creds/r").Secret.TTL; got != time.Hour {
		t.Fatalf("the racing read got ttl %s, want the 1h of the role it read", got)
	}
	if !wrote {
		t.Fatal("the role write did not land during the creds read")
	}
	if got := e.creds("creds/r").Secret.TTL; got != 10*time.Minute {
		t.Errorf("the read after the racing write got ttl %s, want the written 10m: the old role was cached", got)
	}
}

// TestPeriodicReportsAFailedScheduledRotation: Vault logs what the periodic
// function returns, so a scheduled rotation that failed must come back from
// it, naming the failure; one that succeeded returns nothing.
func TestPeriodicReportsAFailedScheduledRotation(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	e.clock.Advance(61 * time.Minute)

	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: http.StatusForbidden, ErrorCode: "forbidden"})
	err := e.periodic()
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("periodic with a due rotation that IMS refused = %v, want an error naming HTTP 403", err)
	}
	e.emu.SetFault(nil)
	e.clock.Advance(61 * time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatalf("periodic with a due rotation that succeeds = %v, want nil", err)
	}
	if e.stored().ClientSecret == testClientSecret {
		t.Fatal("the scheduled rotation did not run")
	}
}

// TestCleanRotationAndRefreshLogNoWarning: a rotation that went through, and
// a periodic refresh with nothing due, log nothing an operator must act on,
// and the refresh does not claim to have replaced anything.
func TestCleanRotationAndRefreshLogNoWarning(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.creds("creds")
	e.mustOK(e.rotate())
	if err := e.periodic(); err != nil {
		t.Fatalf("periodic with nothing due: %v", err)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "rotated the client secret") {
		t.Fatalf("the log does not show the rotation, so it cannot show its warnings either:\n%s", logs)
	}
	for _, unwanted := range []string{"[WARN]", "[ERROR]", "replaced shared tokens"} {
		if strings.Contains(logs, unwanted) {
			t.Errorf("the log holds %q after a clean rotation and a refresh with nothing due:\n%s", unwanted, logs)
		}
	}
}

// TestFormattedRotationNamesItsCredential: formatting a rotation hides its
// secrets but still shows which credential it rotates, and one without a
// config formats without a panic.
func TestFormattedRotationNamesItsCredential(t *testing.T) {
	const bearer = "eyJ.formatted-rotation-bearer"
	r := rotation{cfg: &config{ClientID: "client-to-show", ClientSecret: testClientSecret}, bearer: bearer}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		got := fmt.Sprintf(verb, r)
		if !strings.Contains(got, "client-to-show") || strings.Contains(got, testClientSecret) || strings.Contains(got, bearer) {
			t.Errorf("%s of a rotation = %s: want its client ID and neither secret", verb, got)
		}
	}
	if got := fmt.Sprint(rotation{}); strings.Contains(got, "PANIC") {
		t.Errorf("a rotation without a config formats as %s", got)
	}
}

// TestCreateRefusalOrOutageDecidesTheCleanUp: Adobe answering the create call
// with a 4xx made no secret, so rotation asks nothing more; a 5xx may hide a
// secret Adobe made anyway, so rotation lists the secrets again to delete it
// and says what it found. The boundaries are 400 and 500.
func TestCreateRefusalOrOutageDecidesTheCleanUp(t *testing.T) {
	for _, tc := range []struct {
		status   int
		checked  bool
		attempts int // the IMS client retries a 5xx, not a 4xx
	}{
		{http.StatusBadRequest, false, 1},
		{http.StatusInternalServerError, true, 3},
	} {
		t.Run(fmt.Sprint(tc.status), func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(nil)
			e.setBeforeNet(once(is(opCreate), func() error {
				e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: tc.status, Times: tc.attempts})
				return nil
			}))
			before := e.emu.Stats().ManagementRequests
			resp, err := e.rotate()
			text := fmt.Sprint(err)
			if resp != nil && resp.IsError() {
				text = resp.Error().Error()
			}
			if !strings.Contains(text, fmt.Sprintf("HTTP %d", tc.status)) {
				t.Fatalf("rotation with create answering %d = %v, %v; want that failure", tc.status, resp, err)
			}
			// The list before the create, the create's attempts, and for a
			// 5xx the list after it.
			want := 1 + tc.attempts
			if tc.checked {
				want++
			}
			if n := e.emu.Stats().ManagementRequests - before; n != want {
				t.Errorf("%d I/O Management API requests, want %d", n, want)
			}
			if got := strings.Contains(text, "Adobe created no secret"); got != tc.checked {
				t.Errorf("the error says whether Adobe created a secret anyway: %v, want %v: %s", got, tc.checked, text)
			}
			if n := e.walEntries(); n != 0 {
				t.Errorf("%d write-ahead log entries left, want none: nothing is left to settle", n)
			}
			e.assertSound("after the failed create")
		})
	}
}

// TestVerifyWaitsBetweenMints: a new secret that does not mint yet is tried
// again after a second, then two, four and eight at most; where the IMS
// client's retry waits are tuned, verify follows them.
func TestVerifyWaitsBetweenMints(t *testing.T) {
	for _, tc := range []struct {
		name        string
		opts        ims.Options
		first, most time.Duration
	}{
		{"defaults", ims.Options{}, time.Second, 8 * time.Second},
		{"tuned", ims.Options{RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond}, time.Millisecond, 5 * time.Millisecond},
		{"tuned minimum only", ims.Options{RetryWaitMin: 10 * time.Millisecond}, 10 * time.Millisecond, 10 * time.Millisecond},
	} {
		if first, most := verifyWaits(tc.opts); first != tc.first || most != tc.most {
			t.Errorf("%s: waits %s up to %s, want %s up to %s", tc.name, first, most, tc.first, tc.most)
		}
	}
}

// TestRetireThatCannotReadTheConfigKeepsThePreviousSecret: once the new
// secret is stored, rotation reads the config again before deleting the
// previous secret. If that read fails, it deletes nothing, the rotation
// still succeeds with a warning that says so, and Vault's rollback deletes
// the previous secret later.
func TestRetireThatCannotReadTheConfigKeepsThePreviousSecret(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	old := e.uuidsAtAdobe()
	hooked := e.hookStorage()
	var stored atomic.Bool
	e.afterPut = func(key string) error {
		if key == configStorageKey {
			stored.Store(true)
		}
		return nil
	}
	hooked.setFailGet(func(key string) error {
		if key == configStorageKey && stored.Load() {
			return errors.New("injected: storage unavailable")
		}
		return nil
	})
	resp := e.mustOK(e.rotate())
	hooked.setFailGet(nil)

	if !strings.Contains(strings.Join(resp.Warnings, " "), "reading the config again before deleting the previous secret") {
		t.Errorf("the rotation's warnings do not say the previous secret was kept: %q", resp.Warnings)
	}
	if got := e.uuidsAtAdobe(); len(got) != 2 || !slices.Contains(got, old[0]) {
		t.Fatalf("secrets at Adobe after the failed read: %v, want the previous %s and the new one", got, old[0])
	}
	cfg := e.assertSound("after the rotation")
	e.rollback()
	if settled := e.assertSettled("after the rollback"); settled.ClientSecretUUID != cfg.ClientSecretUUID {
		t.Errorf("the rollback moved the config from %s to %s", cfg.ClientSecretUUID, settled.ClientSecretUUID)
	}
}

// TestScopeListLimitIsInclusive: a list of exactly maxScopes scopes is
// accepted; one more is refused, saying how many are allowed.
func TestScopeListLimitIsInclusive(t *testing.T) {
	scopes := make([]string, maxScopes+1)
	for i := range scopes {
		scopes[i] = fmt.Sprintf("scope_%d", i)
	}
	if got, err := validateScopes("scopes", scopes[:maxScopes]); err != nil || len(got) != maxScopes {
		t.Errorf("%d scopes: %d kept, error %v; want all accepted", maxScopes, len(got), err)
	}
	_, err := validateScopes("scopes", scopes)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("at most %d are allowed", maxScopes)) {
		t.Errorf("%d scopes: error %v, want one saying at most %d are allowed", maxScopes+1, err, maxScopes)
	}
}
