package adobeims

import (
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestRotationLogIsClusterLocal: the write-ahead log entries a rotation
// leaves behind (here: the old secret could not be deleted, so the rollback
// must finish the job) are stored under a LocalStorage prefix, so that a
// performance secondary never gets, and never rolls back, the primary's
// rotation.
func TestRotationLogIsClusterLocal(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	e.setBeforeNet(always(is(opDelete), injected("network down")))
	e.mustOK(e.rotate())
	e.clearHooks()

	keys, err := logical.CollectKeys(t.Context(), e.mem)
	if err != nil {
		t.Fatal(err)
	}
	local := func(key string) bool {
		for _, p := range e.b.PathsSpecial.LocalStorage {
			if strings.HasPrefix(key, p) {
				return true
			}
		}
		return false
	}
	wal := 0
	for _, key := range keys {
		entry, err := e.mem.Get(t.Context(), key)
		if err != nil || entry == nil {
			t.Fatalf("reading %s: %v", key, err)
		}
		if key == configStorageKey || !strings.Contains(string(entry.Value), e.emu.Secrets()[0].UUID) {
			continue // only the log names the secrets that existed before
		}
		wal++
		if !local(key) {
			t.Errorf("storage entry %q, a rotation's log, is replicated to performance secondaries (LocalStorage %v)", key, e.b.PathsSpecial.LocalStorage)
		}
	}
	if wal == 0 {
		t.Fatalf("no storage entry among %v names the secrets of the interrupted rotation: the check above saw nothing", keys)
	}
}
