package e2e

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReleaseBinaryRegistersBySum builds a release the way `make release`
// does and registers the linux/amd64 binary with the sum from SHA256SUMS.
func TestReleaseBinaryRegistersBySum(t *testing.T) {
	const version = "v9.8.7"
	dist := t.TempDir()
	cmd := exec.Command("../scripts/release.sh", version, dist, "linux/amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, out)
	}
	binName := pluginName + "_" + version + "_linux_amd64"
	sums, err := os.Open(filepath.Join(dist, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	defer sums.Close()
	var sum string
	sc := bufio.NewScanner(sums)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[1] == binName {
			sum = f[0]
		}
	}
	if sum == "" {
		t.Fatalf("SHA256SUMS has no line for %s", binName)
	}
	if got, _ := fileSHA256(filepath.Join(dist, binName)); got != sum {
		t.Fatalf("SHA256SUMS says %s, the binary is %s", sum, got)
	}

	// The release binary goes into the plugin directory, as an operator would copy it.
	pluginPath := filepath.Join(suite.pluginDir, binName)
	data, err := os.ReadFile(filepath.Join(dist, binName))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pluginPath, data, 0o755); err != nil { //nolint:gosec // G306: a plugin binary Vault must execute, written into the test's own plugin directory
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(pluginPath) })

	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mustCLI("plugin", "register", "-sha256="+sum, "-version="+version, "-command="+binName, "secret", pluginName)
	v.mustCLI("secrets", "enable", "-path=adobe", "-plugin-version="+version, pluginName)
	v.configure(emu)
	if out := v.mustCLI("read", "adobe/info"); !strings.Contains(out, version) {
		t.Fatalf("adobe/info does not report the release version %s:\n%s", version, out)
	}
	// Vault records any sum at registration, and refuses to run a binary
	// whose sum does not match it.
	v.mustCLI("plugin", "register", "-sha256="+strings.Repeat("0", 64), "-version=v9.8.8", "-command="+binName, "secret", pluginName)
	out, err := v.cli("secrets", "enable", "-path=bad", "-plugin-version=v9.8.8", pluginName)
	if err == nil || !strings.Contains(out, "checksums did not match") {
		t.Fatalf("a binary with a wrong sum was mounted (err %v):\n%s", err, out)
	}
}
