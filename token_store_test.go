package adobeims

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

func (e *rotateEnv) storedTokens() []string {
	e.t.Helper()
	keys, err := e.mem.List(context.Background(), tokensStoragePrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	return keys
}

// TestRestartReusesThePersistedToken: a node that starts anew (restart,
// plugin reload or upgrade) serves the shared token the cluster minted
// before, and asks IMS for nothing while it is valid.
func TestRestartReusesThePersistedToken(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(nil)
	first := e.creds("creds").Data[keyAccessToken]
	if n := len(e.storedTokens()); n != 1 {
		t.Fatalf("%d tokens stored, want 1", n)
	}
	minted := e.emu.Stats().TokenRequests

	e.restart()
	if got := e.creds("creds").Data[keyAccessToken]; got != first {
		t.Error("the restarted node did not serve the persisted token")
	}
	if n := e.emu.Stats().TokenRequests - minted; n != 0 {
		t.Errorf("the restarted node made %d IMS token requests, want 0", n)
	}
	// The stored entry holds the token, so no response but creds may.
	e.mustOK(e.read("info"))
	e.mustOK(e.read("config"))
	if logs := e.logs.String(); strings.Contains(logs, "[WARN]") {
		t.Errorf("storing and loading the token logged a warning:\n%s", logs)
	}
}

// TestStandbyServesThePersistedToken: a performance standby with nothing in
// memory serves the token the active node stored, without IMS.
func TestStandbyServesThePersistedToken(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(nil)
	first := e.creds("creds").Data[keyAccessToken]
	minted := e.emu.Stats().TokenRequests

	standby := newRotateEnv(t, rotateOptions{system: &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}})
	standby.testEnv.emu, standby.testEnv.srv = e.emu, e.srv
	standby.mem, standby.storage = e.mem, e.storage
	standby.start()
	got := standby.creds("creds").Data[keyAccessToken]
	if got != first {
		t.Error("the standby did not serve the token the active node stored")
	}
	if n := e.emu.Stats().TokenRequests - minted; n != 0 {
		t.Errorf("the standby made %d IMS token requests, want 0", n)
	}
}

// TestPersistTokensOff keeps no bearer token at rest, and turning it off
// drops what was stored.
func TestPersistTokensOff(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(nil)
	e.creds("creds")
	if len(e.storedTokens()) != 1 {
		t.Fatal("no token stored with persist_tokens on")
	}
	e.mustOK(e.write("config", map[string]any{keyPersistTokens: false}))
	if n := len(e.storedTokens()); n != 0 {
		t.Fatalf("%d tokens stored after turning persist_tokens off", n)
	}
	e.mustOK(e.write("roles/other", map[string]any{"scopes": "openid"}))
	e.creds("creds/other")
	if n := len(e.storedTokens()); n != 0 {
		t.Fatalf("%d tokens stored with persist_tokens off", n)
	}
	if v := e.mustOK(e.read("config")).Data[keyPersistTokens]; v != false {
		t.Errorf("config shows persist_tokens=%v", v)
	}
}

// TestPersistedTokensGoWithTheCache: a change that drops cached tokens drops
// the stored ones too; a secret-only change keeps both.
func TestPersistedTokensGoWithTheCache(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.creds("creds")
	e.mustOK(e.rotate())
	if len(e.storedTokens()) != 1 {
		t.Fatal("a rotation dropped the stored token, which stays valid at IMS")
	}
	before := e.storedTokens()
	e.mustOK(e.write("config", map[string]any{keyScopes: "openid,AdobeID"}))
	after := e.storedTokens() // the write's verify token, of the new scopes
	if len(after) != 1 || slices.Contains(before, after[0]) {
		t.Fatalf("stored tokens %v after a scope change, were %v: want only the new scopes' token", after, before)
	}
	e.creds("creds")
	e.mustOK(e.request(logical.DeleteOperation, "config", nil))
	if n := len(e.storedTokens()); n != 0 {
		t.Fatalf("%d tokens stored after the config was deleted", n)
	}
}

// TestPersistedTokenOfAnotherCredentialIsIgnored: should a save race a
// config change, the stored token names its client and IMS, and a node
// never serves one minted for another.
func TestPersistedTokenOfAnotherCredentialIsIgnored(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(nil)
	first := e.creds("creds").Data[keyAccessToken].(string)
	e.changeStoredConfig(func(c *config) { c.ClientID = "another-client" })
	e.restart()
	resp, err := e.read("creds")
	if err == nil && !resp.IsError() && resp.Data[keyAccessToken] == first {
		t.Fatal("a token stored for another client was served")
	}
	if err == nil && resp != nil && strings.Contains(dump(resp, err), first) {
		t.Fatal("the response carries the other client's token")
	}
}

// TestStandbyWithoutATokenHandsTheReadToTheActiveNode: a performance
// standby with no servable token in memory or storage mints nothing itself:
// the shared read answers logical.ErrReadOnly, which makes Vault forward it
// to the active node, which mints once for the cluster and stores it.
func TestStandbyWithoutATokenHandsTheReadToTheActiveNode(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configure(map[string]any{"verify": false}) // verify would store a token

	standby := newRotateEnv(t, rotateOptions{system: &logical.StaticSystemView{ReplicationStateVal: consts.ReplicationPerformanceStandby}})
	standby.testEnv.emu, standby.testEnv.srv = e.emu, e.srv
	standby.mem, standby.storage = e.mem, e.storage
	standby.start()
	resp, err := standby.read("creds")
	if !errors.Is(err, logical.ErrReadOnly) {
		t.Fatalf("cold shared read on a performance standby = %#v, %v; want logical.ErrReadOnly so that Vault forwards it", resp, err)
	}
	if n := e.emu.Stats().TokenRequests; n != 0 {
		t.Fatalf("the standby made %d IMS token requests, want 0", n)
	}

	// Forwarded, the active node mints and stores; the standby then serves it.
	first := e.creds("creds").Data[keyAccessToken]
	if got := standby.creds("creds").Data[keyAccessToken]; got != first {
		t.Error("after the active node minted, the standby did not serve its stored token")
	}
	if n := e.emu.Stats().TokenRequests; n != 1 {
		t.Errorf("%d IMS token requests in all, want 1", n)
	}
}
