package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// Helpers shared by agent_test.go, leak_test.go, persistence_test.go and
// upgrade_test.go. Names start with "lc" (lifecycle) to stay clear of the
// helpers other test files define.

// lcCreds reads a creds path through the HTTP API and checks that it is a
// lease holding a token the emulator considers valid.
func lcCreds(t *testing.T, v *vaultServer, emu *emulator, path string) (*api.Secret, string) {
	t.Helper()
	s, err := v.client.Logical().Read(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	tok, err := lcCheckCreds(s, emu)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return s, tok
}

// lcCheckCreds checks that a creds response is a renewable lease with a
// token that is valid at the emulator, and returns the token.
func lcCheckCreds(s *api.Secret, emu *emulator) (string, error) {
	if s == nil || s.Data == nil {
		return "", fmt.Errorf("no data in the response")
	}
	tok, _ := s.Data["access_token"].(string)
	if tok == "" {
		return "", fmt.Errorf("no access_token in %v", s.Data)
	}
	if !emu.TokenValid(tok) {
		return "", fmt.Errorf("access_token is not a valid emulator token")
	}
	if s.LeaseID == "" || s.LeaseDuration <= 0 {
		return "", fmt.Errorf("not a lease: lease_id %q, lease_duration %d", s.LeaseID, s.LeaseDuration)
	}
	return tok, nil
}

// lcRead reads a path through the HTTP API and returns its data.
func lcRead(t *testing.T, v *vaultServer, path string) map[string]any {
	t.Helper()
	s, err := v.client.Logical().Read(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if s == nil {
		t.Fatalf("read %s: nothing there", path)
	}
	return s.Data
}

// lcListRoles lists adobe/roles/ through the HTTP API, sorted as Vault returns them.
func lcListRoles(t *testing.T, v *vaultServer) []string {
	t.Helper()
	s, err := v.client.Logical().List("adobe/roles/")
	if err != nil {
		t.Fatalf("list adobe/roles/: %v", err)
	}
	if s == nil {
		return nil
	}
	var names []string
	keys, _ := s.Data["keys"].([]any)
	for _, k := range keys {
		names = append(names, fmt.Sprint(k))
	}
	return names
}

// lcCheckConfigIntact checks that adobe/config holds what v.configure(emu)
// wrote, and never the client secret.
func lcCheckConfigIntact(t *testing.T, v *vaultServer, emu *emulator) {
	t.Helper()
	cfg := lcRead(t, v, "adobe/config")
	if cfg["client_id"] != testClientID || cfg["ims_url"] != emu.URL {
		t.Errorf("config client_id/ims_url = %v/%v, want %s/%s", cfg["client_id"], cfg["ims_url"], testClientID, emu.URL)
	}
	if got := fmt.Sprint(cfg["scopes"]); got != fmt.Sprint(strings.Split(fireflyScopes, ",")) {
		t.Errorf("config scopes = %s, want %s", got, fireflyScopes)
	}
	if _, ok := cfg["client_secret"]; ok {
		t.Errorf("config read returns a client_secret field: %v", cfg)
	}
	if strings.Contains(fmt.Sprint(cfg), testClientSecret) {
		t.Errorf("config read returns the client secret")
	}
}

// lcVaultPID is the process id of the running vault server.
func lcVaultPID(t *testing.T, v *vaultServer) int {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cmd == nil || v.cmd.Process == nil {
		t.Fatal("vault server is not running")
	}
	return v.cmd.Process.Pid
}

// lcPluginPIDs lists the live processes whose parent is ppid and whose
// program is the plugin binary named command (found through /proc).
func lcPluginPIDs(t *testing.T, ppid int, command string) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("reading /proc: %v", err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		// "pid (comm) state ppid ...": comm may hold spaces, so parse after the last ')'.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 || f[0] == "Z" || f[0] == "X" {
			continue
		}
		if p, _ := strconv.Atoi(f[1]); p != ppid {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cmdline) == 0 {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if filepath.Base(string(argv0)) == command {
			pids = append(pids, pid)
		}
	}
	return pids
}

// TestPersistenceAcrossRestart: a server with file storage keeps the plugin
// registered and mounted, its config (without exposing the secret), its
// roles and its leases across a restart, and keeps serving tokens.
func TestPersistenceAcrossRestart(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{storage: "file"})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis", "ttl=30m")
	v.mustCLI("write", "adobe/roles/firefly-dedicated", "scopes=openid,AdobeID,firefly_api", "mode=dedicated", "ttl=20m", "max_ttl=2h")

	rolesBefore := map[string]map[string]any{
		"firefly":           lcRead(t, v, "adobe/roles/firefly"),
		"firefly-dedicated": lcRead(t, v, "adobe/roles/firefly-dedicated"),
	}
	sharedLease, sharedTok := lcCreds(t, v, emu, "adobe/creds/firefly")
	dedLease, dedTok := lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")
	sharedMints := haSharedMints(emu, "openid,AdobeID,firefly_api,ff_apis")

	dir := v.dir
	v.stop()
	v2 := startVault(t, vaultOptions{storage: "file", dir: dir})

	mounts, err := v2.client.Sys().ListMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := mounts["adobe/"]; !ok || m.Type != pluginName || m.PluginVersion != pluginVersions[0] {
		t.Fatalf("after restart adobe/ is not mounted as %s %s: %+v", pluginName, pluginVersions[0], m)
	}
	lcCheckConfigIntact(t, v2, emu)
	if out := v2.mustCLI("read", "adobe/config"); strings.Contains(out, testClientSecret) {
		t.Errorf("vault read adobe/config shows the client secret:\n%s", out)
	}
	if got := lcListRoles(t, v2); !reflect.DeepEqual(got, []string{"firefly", "firefly-dedicated"}) {
		t.Errorf("roles after restart = %v, want [firefly firefly-dedicated]", got)
	}
	for name, before := range rolesBefore {
		if after := lcRead(t, v2, "adobe/roles/"+name); !reflect.DeepEqual(before, after) {
			t.Errorf("role %s changed across the restart:\nbefore %v\nafter  %v", name, before, after)
		}
	}

	// Tokens keep coming, in both modes; the shared one is the token
	// persisted before the restart, with no IMS request.
	s, tok := lcCreds(t, v2, emu, "adobe/creds/firefly")
	if tok != sharedTok || haSharedMints(emu, "openid,AdobeID,firefly_api,ff_apis") != sharedMints {
		t.Errorf("the restarted Vault minted a shared token though the persisted one is valid")
	}
	if s.LeaseDuration > 30*60 {
		t.Errorf("shared lease after restart lasts %ds, more than the role's ttl of 30m", s.LeaseDuration)
	}
	_, dedTok2 := lcCreds(t, v2, emu, "adobe/creds/firefly-dedicated")
	if dedTok2 == dedTok {
		t.Errorf("a dedicated read after restart returned the token of an earlier dedicated lease")
	}
	lcCreds(t, v2, emu, "adobe/creds")

	// Leases issued before the restart are still managed by the plugin:
	// renewable, and revoking the dedicated one invalidates its token.
	r, err := v2.client.Sys().Renew(sharedLease.LeaseID, 600)
	if err != nil {
		t.Fatalf("renewing a lease issued before the restart: %v", err)
	}
	if r.LeaseDuration <= 0 || r.LeaseDuration > 600 {
		t.Errorf("renewed lease duration %ds, want within (0, 600]", r.LeaseDuration)
	}
	if _, err := v2.cli("lease", "revoke", "-sync", dedLease.LeaseID); err != nil {
		t.Fatalf("revoking a dedicated lease issued before the restart: %v", err)
	}
	if emu.TokenValid(dedTok) {
		t.Errorf("revoking a dedicated lease issued before the restart left its token valid at IMS")
	}
	if !emu.TokenValid(dedTok2) {
		t.Errorf("revoking one dedicated lease invalidated another lease's token")
	}
}

// TestPluginProcessKilled: when the plugin process dies (kill -9), Vault
// starts it again and reads keep working, with the stored config, roles and
// shared token.
func TestPluginProcessKilled(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")
	v.mustCLI("write", "adobe/roles/firefly-dedicated", "scopes=openid,AdobeID,firefly_api", "mode=dedicated")
	_, tok1 := lcCreds(t, v, emu, "adobe/creds/firefly")
	dedLease, dedTok := lcCreds(t, v, emu, "adobe/creds/firefly-dedicated")

	vpid := lcVaultPID(t, v)
	cmdName := pluginCommand(pluginVersions[0])
	pids := lcPluginPIDs(t, vpid, cmdName)
	if len(pids) != 1 {
		t.Fatalf("want exactly one %s process under vault (pid %d), found %v", cmdName, vpid, pids)
	}
	old := pids[0]
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 %d: %v", old, err)
	}
	eventually(t, 10*time.Second, "the killed plugin process to be gone", func() error {
		for _, p := range lcPluginPIDs(t, vpid, cmdName) {
			if p == old {
				return fmt.Errorf("pid %d still alive", p)
			}
		}
		return nil
	})

	issuedBefore := emu.Stats().TokensIssued
	var tok2 string
	eventually(t, 30*time.Second, "creds reads to work again after the plugin was killed", func() error {
		s, err := v.client.Logical().Read("adobe/creds/firefly")
		if err != nil {
			return err
		}
		tok2, err = lcCheckCreds(s, emu)
		return err
	})
	pids = lcPluginPIDs(t, vpid, cmdName)
	if len(pids) != 1 || pids[0] == old {
		t.Errorf("want one new %s process after the kill (old pid %d), found %v", cmdName, old, pids)
	}
	// The new process starts with an empty cache, and serves the shared
	// token the killed one persisted: no IMS request.
	if tok2 != tok1 || emu.Stats().TokensIssued != issuedBefore {
		t.Errorf("the read after the restart did not reuse the persisted token (same token: %v, issued %d -> %d)",
			tok2 == tok1, issuedBefore, emu.Stats().TokensIssued)
	}
	lcCheckConfigIntact(t, v, emu)
	if got := lcListRoles(t, v); !reflect.DeepEqual(got, []string{"firefly", "firefly-dedicated"}) {
		t.Errorf("roles after the plugin restart = %v", got)
	}
	// A lease from the killed process is revoked by the new one.
	if err := v.client.Sys().Revoke(dedLease.LeaseID); err != nil {
		t.Fatalf("revoking a dedicated lease issued by the killed process: %v", err)
	}
	if emu.TokenValid(dedTok) {
		t.Errorf("revoking a dedicated lease issued by the killed process left its token valid")
	}
}
