package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

const (
	modulePath   = "github.com/ims-vault/vault-plugin-secrets-adobe-ims"
	pluginName   = "vault-plugin-secrets-adobe-ims"
	baselineName = "vault-plugin-secrets-bench-baseline"
	rootToken    = "root"
)

// plugin is a built plugin binary in Vault's plugin directory.
type plugin struct {
	name, version, path, sha256 string
}

// buildPlugin builds pkg (an import path in this module) into dir with its
// version injected at ldflagsVar, and hashes it for registration.
func buildPlugin(moduleDir, dir, name, pkg, ldflagsVar, version string) (*plugin, error) {
	out := filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-X "+ldflagsVar+"="+version, "-o", out, pkg)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %w\n%s", pkg, err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, err
	}
	return &plugin{name: name, version: version, path: out, sha256: hex.EncodeToString(h.Sum(nil))}, nil
}

// moduleDir is the root of this module, so the program works from any
// directory inside it.
func moduleDir() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("run loadbench from inside the plugin's module (go run ./bench/loadbench)")
	}
	return filepath.Dir(gomod), nil
}

// vaultServer is one `vault server -dev` process.
type vaultServer struct {
	addr   string
	cmd    *exec.Cmd
	client *api.Client
	done   chan struct{}
}

func startVault(bin, dir, pluginDir, logLevel string) (*vaultServer, error) {
	port, err := freePortPair()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	hcl := filepath.Join(dir, "vault.hcl")
	if err := os.WriteFile(hcl, fmt.Appendf(nil, "plugin_directory = %q\n", pluginDir), 0o600); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "vault.log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "server", "-dev", "-dev-root-token-id="+rootToken, "-dev-listen-address="+addr,
		"-dev-no-store-token", "-log-level="+logLevel, "-config="+hcl)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), "VAULT_ADDR=http://"+addr)
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", bin, err)
	}
	v := &vaultServer{addr: addr, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(v.done) }()

	cfg := api.DefaultConfig()
	cfg.Address = "http://" + addr
	cfg.Timeout = 10 * time.Minute // revoking many leases at once takes a while
	if v.client, err = api.NewClient(cfg); err != nil {
		v.stop()
		return nil, err
	}
	v.client.SetToken(rootToken)
	deadline := time.Now().Add(60 * time.Second)
	for {
		h, err := v.client.Sys().Health()
		if err == nil && !h.Sealed && !h.Standby {
			return v, nil
		}
		select {
		case <-v.done:
			return nil, fmt.Errorf("vault exited while starting; see %s", filepath.Join(dir, "vault.log"))
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			v.stop()
			if err != nil {
				return nil, fmt.Errorf("vault did not answer on %s within 60s: %w", addr, err)
			}
			return nil, fmt.Errorf("vault on %s was not unsealed and active within 60s (sealed %t, standby %t)", addr, h.Sealed, h.Standby)
		}
	}
}

func (v *vaultServer) pid() int { return v.cmd.Process.Pid }

// stop interrupts the server, which stops its plugins, and waits for it.
func (v *vaultServer) stop() {
	_ = v.cmd.Process.Signal(os.Interrupt)
	select {
	case <-v.done:
	case <-time.After(20 * time.Second):
		_ = v.cmd.Process.Kill()
		<-v.done
	}
}

func (v *vaultServer) register(p *plugin) error {
	return v.client.Sys().RegisterPlugin(&api.RegisterPluginInput{
		Name: p.name, Type: api.PluginTypeSecrets, Command: filepath.Base(p.path), SHA256: p.sha256, Version: p.version,
	})
}

func (v *vaultServer) mount(path, typ, version string, options map[string]string) error {
	return v.client.Sys().Mount(path, &api.MountInput{
		Type: typ, Options: options, Config: api.MountConfigInput{PluginVersion: version},
	})
}

func (v *vaultServer) write(path string, data map[string]any) error {
	if _, err := v.client.Logical().Write(path, data); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (v *vaultServer) read(path string) error {
	s, err := v.client.Logical().Read(path)
	if err == nil && s == nil {
		err = errors.New("no data")
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// revokePrefix revokes every lease under prefix and waits for it.
func (v *vaultServer) revokePrefix(ctx context.Context, prefix string) error {
	return v.client.Sys().RevokePrefixWithContext(ctx, prefix)
}

// freePortPair returns a port p such that p and p+1 are free on loopback
// (the dev server's listener and its cluster listener).
func freePortPair() (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p, nil
		}
	}
	return 0, errors.New("no free pair of loopback ports")
}
