package adobeims

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// These tests interleave operations that change the credential at chosen
// steps, through the env's hooks: a paused operation waits on a channel
// until the test releases it, so every interleaving is exact and no test
// sleeps. Each ends by checking what rotation promises: the stored secret
// works, Adobe has at most two secrets, and creds are served.

// gate pauses the first call its hook matches until release.
type gate struct {
	reached, released chan struct{}
	fired             atomic.Bool
}

func newGate() *gate {
	return &gate{reached: make(chan struct{}), released: make(chan struct{})}
}

// at returns a hook that stops the first matching call at the gate.
func (g *gate) at(match func(string) bool) func(string) error {
	return func(x string) error {
		if !match(x) || !g.fired.CompareAndSwap(false, true) {
			return nil
		}
		close(g.reached)
		<-g.released
		return nil
	}
}

func (g *gate) waitReached(t *testing.T) {
	t.Helper()
	select {
	case <-g.reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the operation never reached the gate")
	}
}

func (g *gate) release() { close(g.released) }

// pending is an operation running on its own goroutine.
type pending struct {
	done chan struct{}
	resp *logical.Response
	err  error
}

func (e *rotateEnv) async(op logical.Operation, path string, data map[string]any) *pending {
	p := &pending{done: make(chan struct{})}
	go func() {
		defer close(p.done)
		req := &logical.Request{Operation: op, Path: path, Data: data, Storage: e.storage}
		p.resp, p.err = e.b.HandleRequest(context.Background(), req)
	}()
	return p
}

func (p *pending) wait(t *testing.T) (*logical.Response, error) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the operation did not finish")
	}
	return p.resp, p.err
}

// waitQueuedOrDone returns once p either waits for the writer lock or has
// finished: without the lock, it runs straight through the paused
// operation's window, which is the interleaving under test.
func (e *rotateEnv) waitQueuedOrDone(t *testing.T, op string, p *pending) {
	t.Helper()
	for {
		select {
		case got := <-e.waits:
			if got == op {
				return
			}
		case <-p.done:
			return
		case <-time.After(20 * time.Second):
			t.Fatalf("the %s neither waited for the lock nor finished", op)
		}
	}
}

// assertServes checks that creds are served and that a fresh token can be
// minted with what is stored.
func (e *rotateEnv) assertServes(when string) {
	e.t.Helper()
	e.creds("creds")
	cfg := e.stored()
	if _, err := ims.NewClient(e.srv.URL, ims.Credentials{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret}, ims.Options{}).Token(context.Background(), cfg.Scopes); err != nil {
		e.t.Errorf("%s: the stored secret mints no token: %v", when, err)
	}
}

func (e *rotateEnv) deleteSecretAtAdobe(uuid string) {
	e.t.Helper()
	ctx := context.Background()
	tok, err := ims.NewClient(e.srv.URL, ims.Credentials{ClientID: testClientID, ClientSecret: testClientSecret}, ims.Options{}).Token(ctx, ims.ManagementScopes())
	if err != nil {
		e.t.Fatal(err)
	}
	if err := ims.NewManagement(e.srv.URL, testClientID, ims.Options{}).DeleteSecret(ctx, tok.AccessToken, imsemu.DefaultOrgID, imsemu.DefaultCredentialID, uuid); err != nil {
		e.t.Fatal(err)
	}
}

// TestOverlappingRotationsKeepAWorkingSecret: the first rotation has listed
// the secrets when a second one is asked for. Unserialized, the second
// rotates fully, then the first's create answer is lost and it deleted every
// secret missing from its list: the second's stored one too, leaving none.
func TestOverlappingRotationsKeepAWorkingSecret(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.creds("creds")

	listed := newGate()
	e.mu.Lock()
	e.afterNet = listed.at(is(opList))
	e.mu.Unlock()
	first := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	listed.waitReached(t)

	second := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	e.waitQueuedOrDone(t, opRotateRoot, second)

	// The first rotation's create is served, and its answer lost.
	e.mu.Lock()
	e.afterNet = once(is(opCreate), injected("connection reset"))
	e.mu.Unlock()
	listed.release()
	resp, err := first.wait(t)
	e.mustFail(resp, err, "creating a new client secret")
	e.mustOK(second.wait(t))

	e.assertSound("after overlapping rotations")
	e.assertServes("after overlapping rotations")
	if n := e.walEntries(); n != 0 {
		t.Errorf("%d write-ahead log entries left", n)
	}
}

// TestFailedCreateKeepsTheSecretAnotherNodeStored: between a rotation's
// list and its create, another node (not held by this node's lock) rotates
// the secret. The create's answer is lost; deleting what appeared since the
// list must spare the secret the config now names.
func TestFailedCreateKeepsTheSecretAnotherNodeStored(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	original := e.uuidsAtAdobe()[0]

	var fired atomic.Bool
	e.mu.Lock()
	e.afterNet = func(op string) error {
		switch {
		case op == opList && fired.CompareAndSwap(false, true):
			// The other node's whole rotation, as Adobe and storage see it.
			uuid := e.addSecretAtAdobe()
			all := e.allSecrets()
			cfg := e.stored()
			cfg.ClientSecret, cfg.ClientSecretUUID, cfg.SecretStamp = all[len(all)-1], uuid, newSecretStamp()
			if err := putConfig(context.Background(), e.mem, cfg); err != nil {
				return err
			}
			e.deleteSecretAtAdobe(original)
		case op == opCreate:
			return errors.New("injected: connection reset")
		}
		return nil
	}
	e.mu.Unlock()
	resp, err := e.rotate()
	e.mustFail(resp, err, "creating a new client secret")
	e.clearHooks()

	cfg := e.assertSound("after a failed create")
	if got := e.uuidsAtAdobe(); !slices.Equal(got, []string{cfg.ClientSecretUUID}) {
		t.Errorf("Adobe has %v, want only the stored %s", got, cfg.ClientSecretUUID)
	}
	e.assertServes("after a failed create")
}

// TestConfigWriteRacingARotation: a config write has read the config and
// verified it when a rotation is asked for. Unserialized, the rotation
// stores a new secret and deletes the old, then the write stores the old
// secret back: the stored secret no longer exists at Adobe.
func TestConfigWriteRacingARotation(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)

	saving := newGate()
	e.mu.Lock()
	e.beforePut = saving.at(is(configStorageKey))
	e.mu.Unlock()
	write := e.async(logical.UpdateOperation, "config", map[string]any{keyScopes: "openid,AdobeID,firefly_api"})
	saving.waitReached(t)

	rotation := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	e.waitQueuedOrDone(t, opRotateRoot, rotation)
	saving.release()
	e.mustOK(write.wait(t))
	e.mustOK(rotation.wait(t))

	cfg := e.assertSound("after a config write raced a rotation")
	if len(cfg.Scopes) != 3 {
		t.Errorf("the config write was lost: scopes %v", cfg.Scopes)
	}
	if cfg.ClientSecret == testClientSecret {
		t.Error("the rotation was undone: the original secret is stored")
	}
	e.assertServes("after a config write raced a rotation")
}

// TestConfigDeleteDuringRotation: a rotation has stored the new secret when
// the config is deleted. Unserialized, the rotation then points the node at
// the config it stored, and creds keep being served from a deleted config.
func TestConfigDeleteDuringRotation(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)

	stored := newGate()
	e.mu.Lock()
	e.afterPut = stored.at(is(configStorageKey))
	e.mu.Unlock()
	rotation := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	stored.waitReached(t)

	del := e.async(logical.DeleteOperation, "config", nil)
	e.waitQueuedOrDone(t, opConfigDelete, del)
	stored.release()
	e.mustOK(rotation.wait(t))
	e.mustOK(del.wait(t))

	if cfg, err := getConfig(context.Background(), e.mem); err != nil || cfg != nil {
		t.Fatalf("config after delete: %+v, %v", cfg, err)
	}
	resp, err := e.read("creds")
	e.mustFail(resp, err, "not configured")
	if n := len(e.emu.Secrets()); n > 2 {
		t.Errorf("%d secrets at Adobe", n)
	}
}

// TestRetireSparesTheStoredSecret: after a rotation stored its new secret,
// another node stores the previous secret back (a write of it). Retiring the
// previous secret would leave the config holding a deleted one.
func TestRetireSparesTheStoredSecret(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	before := e.stored()

	var fired atomic.Bool
	e.mu.Lock()
	e.afterPut = func(key string) error {
		if key == configStorageKey && fired.CompareAndSwap(false, true) {
			back := *before
			back.SecretStamp = newSecretStamp()
			return putConfig(context.Background(), e.mem, &back)
		}
		return nil
	}
	e.mu.Unlock()
	resp := e.mustOK(e.rotate())
	if len(resp.Warnings) == 0 {
		t.Error("no warning that the previous secret was kept")
	}
	e.clearHooks()
	e.assertSound("after the config changed under a rotation")
	e.assertServes("after the config changed under a rotation")

	// The rollback settles the unused new secret, never the stored one.
	e.rollback()
	e.assertSound("after rollback")
}

// TestConfigWriteGivesUpWhenTheRequestEnds: a write queued behind a rotation
// answers 503 when its request is cancelled, and stores nothing.
func TestConfigWriteGivesUpWhenTheRequestEnds(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	listed := newGate()
	e.mu.Lock()
	e.afterNet = listed.at(is(opList))
	e.mu.Unlock()
	rotation := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	listed.waitReached(t)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req := &logical.Request{Operation: logical.UpdateOperation, Path: "config", Data: map[string]any{keyScopes: "openid"}, Storage: e.storage}
		_, err := e.b.HandleRequest(ctx, req)
		done <- err
	}()
	select {
	case op := <-e.waits:
		if op != opConfigWrite {
			t.Fatalf("%s waited, want the config write", op)
		}
	case err := <-done:
		t.Fatalf("the config write did not wait for the rotation: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the config write neither waited nor finished")
	}
	cancel()
	err := <-done
	var coded logical.HTTPCodedError
	if !errors.As(err, &coded) || coded.Code() != 503 {
		t.Fatalf("want a 503, got %v", err)
	}
	for _, want := range []string{"config write", "rotate-root", "try again"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	listed.release()
	e.mustOK(rotation.wait(t))
	if got := e.stored().Scopes; len(got) != 4 {
		t.Errorf("the cancelled write changed scopes to %v", got)
	}
}

// TestOverlappingConfigWritesServeTheLastConfig: one write moves IMS to a
// second host and is paused right after storing; another moves it back.
// Unserialized, the first then caches the token it verified with, and creds
// serve a token of a host the stored config no longer names.
func TestOverlappingConfigWritesServeTheLastConfig(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	other := newAttacker(t)

	stored := newGate()
	e.mu.Lock()
	e.afterPut = stored.at(is(configStorageKey))
	e.mu.Unlock()
	first := e.async(logical.UpdateOperation, "config", map[string]any{keyIMSURL: other.url, keyClientSecret: testClientSecret})
	stored.waitReached(t)

	second := e.async(logical.UpdateOperation, "config", map[string]any{keyIMSURL: e.srv.URL, keyClientSecret: testClientSecret})
	e.waitQueuedOrDone(t, opConfigWrite, second)
	stored.release()
	e.mustOK(first.wait(t))
	e.mustOK(second.wait(t))

	if got := e.stored().IMSURL; got != e.srv.URL {
		t.Fatalf("stored ims_url %q, want the last write's %q", got, e.srv.URL)
	}
	token := e.creds("creds").Data[keyAccessToken].(string)
	if !slices.ContainsFunc(e.emu.Tokens(), func(it imsemu.IssuedToken) bool { return it.AccessToken == token }) {
		t.Error("creds served a token that the stored config's IMS did not issue")
	}
}

// TestEveryCredentialWriterWaitsForTheLock: while a rotation holds the
// lock, role writes and the rollback of interrupted rotations wait for it,
// as config writes and deletes do, and the scheduled rotation of the
// periodic call skips its turn rather than stall Vault's periodic call.
func TestEveryCredentialWriterWaitsForTheLock(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	e.clock.Advance(2 * time.Hour) // the schedule is due

	// The rotation stops once its write-ahead log entry is written, so the
	// rollback has an entry to wait for.
	logged := newGate()
	e.mu.Lock()
	e.afterPut = logged.at(func(k string) bool { return strings.HasPrefix(k, "wal/") })
	e.mu.Unlock()
	rotation := e.async(logical.UpdateOperation, "config/rotate-root", nil)
	logged.waitReached(t)

	requests := e.emu.Stats().ManagementRequests
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil {
		t.Fatalf("scheduled rotation while the lock is held: %v", err)
	}
	if n := e.emu.Stats().ManagementRequests - requests; n != 0 {
		t.Fatalf("scheduled rotation ran beside another rotation: %d management calls", n)
	}

	role := e.async(logical.UpdateOperation, "roles/r", map[string]any{keyScopes: "openid"})
	rollback := e.async(logical.RollbackOperation, "", map[string]any{"immediate": true})
	waiting := map[string]bool{}
	for !waiting[opRoleWrite] || !waiting[opRollback] {
		select {
		case op := <-e.waits:
			waiting[op] = true
		case <-role.done:
			t.Fatal("the role write did not wait for the rotation")
		case <-rollback.done:
			t.Fatal("the rollback did not wait for the rotation")
		case <-time.After(20 * time.Second):
			t.Fatalf("only %v waited", waiting)
		}
	}
	logged.release()
	e.mustOK(rotation.wait(t))
	e.mustOK(role.wait(t))
	if resp, err := rollback.wait(t); err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("rollback after the rotation: %v %v", resp, err)
	}
	e.assertSound("after every writer ran in turn")
	e.assertServes("after every writer ran in turn")
	if n := e.walEntries(); n != 0 {
		t.Errorf("%d write-ahead log entries left", n)
	}
}

// TestRotationKeepsNoSecretOutsideTheConfig: whatever step a rotation stops
// at, no client secret sits in storage but in the seal-wrapped config; the
// write-ahead log names secrets by uuid.
func TestRotationKeepsNoSecretOutsideTheConfig(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	// The node dies while it proves the new secret: the entry stays.
	var created atomic.Bool
	e.mu.Lock()
	e.afterNet = func(op string) error { created.Store(created.Load() || op == opCreate); return nil }
	e.beforeNet = func(op string) error {
		if created.Load() && op == opMint {
			return e.crash()
		}
		return nil
	}
	e.mu.Unlock()
	_, _ = e.rotate()
	e.restart()
	if e.walEntries() != 1 {
		t.Fatal("the crash left no write-ahead log entry to check")
	}
	keys, err := logical.CollectKeys(context.Background(), e.mem)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k == configStorageKey {
			continue
		}
		entry, err := e.mem.Get(context.Background(), k)
		if err != nil || entry == nil {
			t.Fatalf("reading %s: %v", k, err)
		}
		e.assertNoRotatedSecretsIn("storage entry "+k, string(entry.Value))
	}
	if len(e.allSecrets()) < 2 {
		t.Fatal("no new secret was created, so the check saw none")
	}
}
