// Package e2e runs the plugin inside real Vault servers (built by
// scripts/vault.sh and named by VAULT_BINARY), registered by SHA-256 and
// version, and drives it through the vault CLI, the HTTP API and Vault Agent.
// Adobe IMS is played by the in-process IMS emulator (internal/imsemu), a
// test double.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

const (
	pluginName = "vault-plugin-secrets-adobe-ims"
	rootToken  = "root"

	testClientID     = "e2e-client-id"
	testClientSecret = "p8e-E2eQ9vL3mX7rT2kW8nB4yH6cJ5dS"
	fireflyScopes    = "openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"
)

// pluginVersions are built once by TestMain; the first is the one mounted
// by default, the second exists for upgrade tests.
var pluginVersions = []string{"v0.1.0", "v0.2.0"}

// suite holds what TestMain prepared; it is written once before any test runs.
var suite struct {
	vaultBin  string
	pluginDir string
	sha256    map[string]string // version -> SHA-256 of its binary
}

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	suite.vaultBin = os.Getenv("VAULT_BINARY")
	if suite.vaultBin == "" {
		fmt.Fprintln(os.Stderr, "e2e: VAULT_BINARY is not set; run `make e2e`, which builds Vault and sets it")
		return 1
	}
	dir, err := os.MkdirTemp("", "adobe-ims-e2e-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	suite.pluginDir = dir
	suite.sha256 = map[string]string{}
	for _, v := range pluginVersions {
		out := filepath.Join(dir, pluginCommand(v))
		cmd := exec.Command("go", "build", "-trimpath",
			"-ldflags", "-X github.com/ims-vault/vault-plugin-secrets-adobe-ims.Version="+v,
			"-o", out, "../cmd/"+pluginName)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building the plugin %s: %v\n%s", v, err, b)
			return 1
		}
		sum, err := fileSHA256(out)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		suite.sha256[v] = sum
	}
	return m.Run()
}

func pluginCommand(version string) string { return pluginName + "-" + version }

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// emulator is an in-process IMS emulator on a loopback port.
type emulator struct {
	*imsemu.Emulator
	URL string
}

func startEmulator(t *testing.T, expiresIn time.Duration) *emulator {
	t.Helper()
	emu := newEmulator(expiresIn)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	return &emulator{Emulator: emu, URL: srv.URL}
}

// newEmulator is the emulator every e2e test uses: the test credential,
// granted the Firefly and the I/O Management scopes.
func newEmulator(expiresIn time.Duration) *imsemu.Emulator {
	return imsemu.New(imsemu.Config{
		ClientID:     testClientID,
		ClientSecret: testClientSecret,
		Scopes:       append(strings.Split(fireflyScopes, ","), imsemu.ManagementScopes()...),
		ExpiresIn:    expiresIn,
	})
}

// vaultServer is one `vault server` process on loopback ports.
type vaultServer struct {
	t       *testing.T
	addr    string
	dir     string
	logPath string
	token   string
	client  *api.Client

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has ended
}

type vaultOptions struct {
	// storage is "" for a dev server (in memory), or "file" for a server
	// with file storage that is initialised and unsealed like production.
	storage string
	// dir reuses a data directory, to restart a server on the same storage.
	dir string
	// extraConfig is appended to the server's HCL config.
	extraConfig string
}

// startVault starts a server and waits until it serves requests.
func startVault(t *testing.T, opts vaultOptions) *vaultServer {
	t.Helper()
	dir := opts.dir
	if dir == "" {
		dir = t.TempDir()
	}
	port := freePortPair(t)
	v := &vaultServer{t: t, addr: fmt.Sprintf("127.0.0.1:%d", port), dir: dir, logPath: filepath.Join(dir, fmt.Sprintf("vault-%d.log", port))}

	hcl := fmt.Sprintf("plugin_directory = %q\n%s\n", suite.pluginDir, opts.extraConfig)
	args := []string{"server", "-log-level=trace", "-config=" + filepath.Join(dir, "vault.hcl")}
	if opts.storage == "" {
		args = append(args, "-dev", "-dev-root-token-id="+rootToken, "-dev-listen-address="+v.addr, "-dev-no-store-token")
		v.token = rootToken
	} else {
		hcl += fmt.Sprintf(`
storage "file" { path = %q }
listener "tcp" {
  address     = %q
  cluster_address = "127.0.0.1:%d"
  tls_disable = true
}
api_addr     = "http://%s"
cluster_addr = "http://127.0.0.1:%d"
disable_mlock = true
`, filepath.Join(dir, "data"), v.addr, port+1, v.addr, port+1)
	}
	if err := os.WriteFile(filepath.Join(dir, "vault.hcl"), []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	v.start(args)

	cfg := api.DefaultConfig()
	cfg.Address = "http://" + v.addr
	client, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v.client = client
	v.waitUp()
	if opts.storage != "" {
		v.initAndUnseal()
	}
	v.client.SetToken(v.token)
	return v
}

func (v *vaultServer) start(args []string) {
	v.t.Helper()
	logf, err := os.OpenFile(v.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		v.t.Fatal(err)
	}
	cmd := exec.Command(suite.vaultBin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "VAULT_ADDR=http://"+v.addr)
	if err := cmd.Start(); err != nil {
		v.t.Fatalf("starting vault: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	v.mu.Lock()
	v.cmd, v.exited = cmd, exited
	v.mu.Unlock()
	v.t.Cleanup(func() {
		v.stop()
		logf.Close()
		if v.t.Failed() {
			b, _ := os.ReadFile(v.logPath)
			v.t.Logf("vault log %s (last 4KB):\n%s", v.logPath, tail(b, 4096))
		}
	})
}

// stop ends the server and waits for it.
func (v *vaultServer) stop() {
	v.mu.Lock()
	cmd, exited := v.cmd, v.exited
	v.cmd = nil
	v.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(os.Interrupt)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

func (v *vaultServer) waitUp() {
	v.t.Helper()
	v.mu.Lock()
	exited := v.exited
	v.mu.Unlock()
	eventually(v.t, 60*time.Second, "vault to answer on "+v.addr, func() error {
		select {
		case <-exited:
			v.t.Fatalf("vault exited while starting; its log:\n%s", tail([]byte(v.logText()), 4096))
		default:
		}
		_, err := v.client.Sys().Health()
		return err
	})
}

func (v *vaultServer) initAndUnseal() {
	v.t.Helper()
	keyFile := filepath.Join(v.dir, "unseal-key")
	tokenFile := filepath.Join(v.dir, "root-token")
	if st, err := v.client.Sys().InitStatus(); err != nil {
		v.t.Fatal(err)
	} else if !st {
		resp, err := v.client.Sys().Init(&api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			v.t.Fatalf("vault operator init: %v", err)
		}
		if err := os.WriteFile(keyFile, []byte(resp.KeysB64[0]), 0o600); err != nil {
			v.t.Fatal(err)
		}
		if err := os.WriteFile(tokenFile, []byte(resp.RootToken), 0o600); err != nil {
			v.t.Fatal(err)
		}
	}
	key, err := os.ReadFile(keyFile)
	if err != nil {
		v.t.Fatal(err)
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		v.t.Fatal(err)
	}
	if _, err := v.client.Sys().Unseal(string(key)); err != nil {
		v.t.Fatalf("unseal: %v", err)
	}
	v.token = string(tok)
	v.client.SetToken(v.token)
	eventually(v.t, 60*time.Second, "vault to become active", func() error {
		h, err := v.client.Sys().Health()
		if err != nil {
			return err
		}
		if h.Sealed || h.Standby {
			return fmt.Errorf("sealed=%v standby=%v", h.Sealed, h.Standby)
		}
		return nil
	})
}

// cli runs the vault CLI against this server with its root token.
func (v *vaultServer) cli(args ...string) (string, error) {
	return v.cliAs(v.token, "", args...)
}

// cliAs runs the vault CLI with token, feeding stdin.
func (v *vaultServer) cliAs(token, stdin string, args ...string) (string, error) {
	v.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, suite.vaultBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR=http://"+v.addr, "VAULT_TOKEN="+token, "VAULT_FORMAT=")
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

func (v *vaultServer) mustCLI(args ...string) string {
	v.t.Helper()
	out, err := v.cli(args...)
	if err != nil {
		v.t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// registerPlugin registers a built plugin version by its SHA-256.
func (v *vaultServer) registerPlugin(version string) {
	v.t.Helper()
	v.mustCLI("plugin", "register", "-sha256="+suite.sha256[version], "-version="+version,
		"-command="+pluginCommand(version), "secret", pluginName)
}

// mountPlugin registers the first plugin version and mounts it at adobe/.
func (v *vaultServer) mountPlugin() {
	v.t.Helper()
	v.registerPlugin(pluginVersions[0])
	v.mustCLI("secrets", "enable", "-path=adobe", "-plugin-version="+pluginVersions[0], pluginName)
}

// configure writes the config through the CLI, the secret through stdin.
func (v *vaultServer) configure(emu *emulator, extra ...string) {
	v.t.Helper()
	args := append([]string{"write", "adobe/config", "client_id=" + testClientID, "client_secret=-",
		"scopes=" + fireflyScopes, "ims_url=" + emu.URL, "io_management_url=" + emu.URL}, extra...)
	if out, err := v.cliAs(v.token, testClientSecret, args...); err != nil {
		v.t.Fatalf("vault write adobe/config: %v\n%s", err, out)
	}
}

// logText is everything the server and the plugin logged so far.
func (v *vaultServer) logText() string {
	b, err := os.ReadFile(v.logPath)
	if err != nil {
		v.t.Fatal(err)
	}
	return string(b)
}

// freePortPair returns a port p such that p and p+1 are free on loopback
// (Vault's listener and its cluster listener).
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no free pair of loopback ports")
	return 0
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// startVaultProcess runs `vault <command>` (agent or proxy) with the config
// hcl, written to dir, until the test ends. Only the config names the server
// and the token: no VAULT_* variable is passed on. At the end it sends
// SIGTERM, so that an agent in process-supervisor mode stops its child
// first, and kills it after 20 seconds. Its log is printed when the test
// fails. The returned channel receives the process's exit if it ends early.
func startVaultProcess(t *testing.T, dir, command, hcl string) <-chan error {
	t.Helper()
	cfgPath := filepath.Join(dir, command+".hcl")
	if err := os.WriteFile(cfgPath, []byte(hcl), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, command+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(suite.vaultBin, command, "-log-level=trace", "-config="+cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VAULT_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("starting vault %s: %v", command, err)
	}
	done := make(chan error, 1)
	exited := make(chan struct{})
	go func() { done <- cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("vault %s log %s (last 12KB):\n%s", command, logPath, tail(b, 12288))
		}
	})
	return done
}

// appToken is a token, as an application gets one, whose only policy (with
// default) grants read on adobe/creds/<role>.
func (v *vaultServer) appToken(role string) string {
	v.t.Helper()
	policy := fmt.Sprintf(`path "adobe/creds/%s" { capabilities = ["read"] }`, role)
	if out, err := v.cliAs(v.token, policy, "policy", "write", "adobe-"+role+"-app", "-"); err != nil {
		v.t.Fatalf("vault policy write: %v\n%s", err, out)
	}
	s, err := v.client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"adobe-" + role + "-app"}, TTL: "1h"})
	if err != nil {
		v.t.Fatal(err)
	}
	return s.Auth.ClientToken
}

// apiAnswer is what the emulator's Adobe API stand-in answered.
type apiAnswer struct {
	status    int
	errorCode string // the gateway's error_code on a refusal
	body      string
}

// requireTools fails the test unless every tool the docs' shell recipes run
// is on PATH (.ci/run installs curl and jq where they are missing).
func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("no %s on this machine to run the docs' recipe (.ci/run installs it): %v", tool, err)
		}
	}
}

// callAdobeAPI calls the emulator's Adobe API stand-in (Firefly image
// generation) as an application calls an Adobe API: the access token as a
// bearer token and the client ID as x-api-key.
func callAdobeAPI(t *testing.T, emu *emulator, accessToken, apiKey string) apiAnswer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, emu.URL+imsemu.APIPath, strings.NewReader(`{"prompt":"a lighthouse at dusk"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+accessToken)
	req.Header.Set("x-api-key", apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("calling the Adobe API stand-in: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := apiAnswer{status: resp.StatusCode, body: string(b)}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			ErrorCode string `json:"error_code"`
		}
		_ = json.Unmarshal(b, &e)
		a.errorCode = e.ErrorCode
	}
	return a
}

// agentConfig is the config of a Vault Agent or Vault Proxy that talks to v
// and authenticates with token, written to a file in dir; rest is the
// remainder of the config (templates, exec, listeners, caches).
func (v *vaultServer) agentConfig(t *testing.T, dir, token, rest string) string {
	t.Helper()
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`
vault {
  address = "http://%s"
}
auto_auth {
  method "token_file" {
    config = {
      token_file_path = %q
    }
  }
}
`, v.addr, tokenFile) + rest
}
