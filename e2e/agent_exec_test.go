package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// axAppSource is the application Vault Agent supervises: it takes its token
// and API key from ADOBE_ACCESS_TOKEN and ADOBE_API_KEY, as the docs' exec
// recipe hands them over, calls the API stand-in (os.Args[1]) every second and
// appends what happened to a record file (os.Args[2]), one line each:
//
//	<unix ms> <pid> start token=<fingerprint> key=<ADOBE_API_KEY>
//	<unix ms> <pid> call status=<HTTP status, 0 on a network error> token=<fingerprint>
//	<unix ms> <pid> stop signal=<signal>
//
// The fingerprint is the first 12 hex digits of the token's SHA-256 ("-" for
// none): the record never holds a token. The application ends on SIGTERM (the
// agent's restart_stop_signal), and on its own when the agent is gone or after
// three minutes, so a failed test leaves nothing running.
const axAppSource = `package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

func main() {
	api, record := os.Args[1], os.Args[2]
	token, key := os.Getenv("ADOBE_ACCESS_TOKEN"), os.Getenv("ADOBE_API_KEY")
	f, err := os.OpenFile(record, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		os.Exit(3)
	}
	fp := "-"
	if token != "" {
		sum := sha256.Sum256([]byte(token))
		fp = hex.EncodeToString(sum[:])[:12]
	}
	note := func(format string, a ...any) {
		line := fmt.Sprintf("%d %d ", time.Now().UnixMilli(), os.Getpid()) + fmt.Sprintf(format, a...) + "\n"
		if _, err := f.WriteString(line); err != nil {
			os.Exit(4)
		}
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	note("start token=%s key=%s", fp, key)

	client := &http.Client{Timeout: 5 * time.Second}
	agent := os.Getppid()
	tick := time.NewTicker(time.Second)
	end := time.After(3 * time.Minute)
	for {
		status := 0
		req, _ := http.NewRequest(http.MethodPost, api, strings.NewReader(` + "`" + `{"prompt":"a lighthouse at dusk"}` + "`" + `))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("x-api-key", key)
		req.Header.Set("Content-Type", "application/json")
		if resp, err := client.Do(req); err == nil {
			status = resp.StatusCode
			resp.Body.Close()
		}
		note("call status=%d token=%s", status, fp)
		select {
		case s := <-stop:
			note("stop signal=%s", s)
			return
		case <-end:
			return
		case <-tick.C:
			if os.Getppid() != agent {
				return
			}
		}
	}
}
`

// axRecord is one line of the application's record file.
type axRecord struct {
	at     time.Time
	pid    int
	event  string            // start, call or stop
	fields map[string]string // token, key, status, signal
}

// TestAgentExecRestartsAppWithNewToken: Vault Agent in process-supervisor mode
// (env_template + exec) starts the application with ADOBE_ACCESS_TOKEN and
// ADOBE_API_KEY from one creds read; the application's Adobe API calls
// succeed; when the short-lived token nears its end the agent restarts the
// application with the new token before the old one expires, and not one call
// fails across the switch.
func TestAgentExecRestartsAppWithNewToken(t *testing.T) {
	const lifetime = 30 * time.Second
	emu := startEmulator(t, lifetime)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")

	dir := t.TempDir()
	app := filepath.Join(dir, "adobe-app")
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(axAppSource), 0o600); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", app, "main.go")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the application: %v\n%s", err, out)
	}

	record := filepath.Join(dir, "app-record")
	// The exec recipe of docs/calling-adobe-apis.md, with this test's paths.
	hcl := v.agentConfig(t, dir, v.appToken("firefly"), fmt.Sprintf(`template_config {
  exit_on_retry_failure = true
}
env_template "ADOBE_ACCESS_TOKEN" {
  contents             = "{{ with secret \"adobe/creds/firefly\" }}{{ .Data.access_token }}{{ end }}"
  error_on_missing_key = true
}
env_template "ADOBE_API_KEY" {
  contents             = "{{ with secret \"adobe/creds/firefly\" }}{{ .Data.client_id }}{{ end }}"
  error_on_missing_key = true
}
exec {
  command                   = [%q, %q, %q]
  restart_on_secret_changes = "always"
  restart_stop_signal       = "SIGTERM"
}
`, app, emu.URL+imsemu.APIPath, record))
	start := time.Now()
	agentDone := startVaultProcess(t, dir, "agent", hcl)

	// The two env_templates read the path once: one lease.
	eventually(t, 30*time.Second, "the application to start", func() error {
		select {
		case err := <-agentDone:
			t.Fatalf("vault agent exited: %v", err)
		default:
		}
		if len(axReadRecords(t, record)) == 0 {
			return fmt.Errorf("no record yet")
		}
		return nil
	})
	if leases := pxLeases(t, v); len(leases) != 1 {
		t.Errorf("the agent holds %d leases on adobe/creds/firefly for its two env_templates; want 1", len(leases))
	}

	// Wait for the second token, and three calls made with it.
	var recs []axRecord
	eventually(t, 80*time.Second, "the application to run with a second token", func() error {
		select {
		case err := <-agentDone:
			t.Fatalf("vault agent exited: %v", err)
		default:
		}
		recs = axReadRecords(t, record)
		var fps []string
		after := 0
		for _, r := range recs {
			if r.event != "call" {
				continue
			}
			if r.fields["status"] != "200" {
				return nil // fails below
			}
			if fp := r.fields["token"]; len(fps) == 0 || fps[len(fps)-1] != fp {
				fps, after = append(fps, fp), 0
			}
			after++
		}
		if len(fps) < 2 || after < 3 {
			return fmt.Errorf("calls made with %d token(s), %d with the latest", len(fps), after)
		}
		return nil
	})
	elapsed := time.Since(start)

	// Each token the application ran with, in order, as the emulator knows it.
	byFP := map[string]imsemu.IssuedToken{}
	for _, it := range emu.Tokens() {
		sum := sha256.Sum256([]byte(it.AccessToken))
		byFP[hex.EncodeToString(sum[:])[:12]] = it
	}
	type run struct {
		pid          int
		fp           string
		started      time.Time
		calls, ok200 int
	}
	var runs []*run
	statuses := map[string]int{}
	for _, r := range recs {
		switch r.event {
		case "start":
			if r.fields["token"] == "-" || r.fields["key"] != testClientID {
				t.Errorf("the application started with ADOBE_ACCESS_TOKEN fingerprint %q and ADOBE_API_KEY %q; want a token and %q",
					r.fields["token"], r.fields["key"], testClientID)
			}
			runs = append(runs, &run{pid: r.pid, fp: r.fields["token"], started: r.at})
		case "call":
			statuses[r.fields["status"]]++
			if len(runs) == 0 || runs[len(runs)-1].pid != r.pid {
				t.Fatalf("a call by pid %d before that process's start line", r.pid)
			}
			cur := runs[len(runs)-1]
			cur.calls++
			if r.fields["status"] == "200" {
				cur.ok200++
			}
		}
	}
	t.Logf("Agent exec: %d application runs in %s; API stand-in statuses %v; emulator API accepted %d, refused %d",
		len(runs), elapsed.Round(time.Second), statuses, emu.Stats().APIAccepted, emu.Stats().APIRejections)
	if len(statuses) != 1 || statuses["200"] == 0 {
		t.Errorf("the application's API calls answered %v; want 200 only", statuses)
	}
	if n := emu.Stats().APIRejections; n != 0 {
		t.Errorf("the API stand-in refused %d calls", n)
	}
	distinct := map[string]bool{}
	for i, r := range runs {
		it, ok := byFP[r.fp]
		if !ok {
			t.Fatalf("run %d (pid %d) had a token the emulator never issued", i+1, r.pid)
		}
		distinct[r.fp] = true
		t.Logf("run %d: pid %d, token %s (issued %s, expires %s), started %s, %d/%d calls 200",
			i+1, r.pid, r.fp, it.IssuedAt.Format(time.TimeOnly), it.ExpiresAt.Format(time.TimeOnly),
			r.started.Format("15:04:05.000"), r.ok200, r.calls)
		if it.APICalls < r.ok200 {
			t.Errorf("run %d: the emulator counts %d accepted calls with its token, the application %d", i+1, it.APICalls, r.ok200)
		}
		if i == 0 {
			continue
		}
		prev := runs[i-1]
		if r.pid == prev.pid {
			t.Errorf("runs %d and %d have the same pid %d: the application was not restarted", i, i+1, r.pid)
		}
		old := byFP[prev.fp]
		lead := old.ExpiresAt.Sub(r.started)
		t.Logf("switch %d->%d: new token in use %s before the old one expired", i, i+1, lead.Round(time.Millisecond))
		if r.fp == prev.fp {
			t.Errorf("run %d restarted the application with the same token", i+1)
		}
		if lead <= 0 {
			t.Errorf("run %d started at %s, after its predecessor's token expired at %s",
				i+1, r.started.Format(time.StampMilli), old.ExpiresAt.Format(time.StampMilli))
		}
	}
	if len(distinct) < 2 {
		t.Errorf("the application ran with %d distinct token(s); want at least 2", len(distinct))
	}
}

// axReadRecords parses the application's record file (missing: none yet).
func axReadRecords(t *testing.T, path string) []axRecord {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var recs []axRecord
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue // a line being written
		}
		ms, err1 := strconv.ParseInt(f[0], 10, 64)
		pid, err2 := strconv.Atoi(f[1])
		if err1 != nil || err2 != nil {
			t.Fatalf("bad record line %q", line)
		}
		r := axRecord{at: time.UnixMilli(ms), pid: pid, event: f[2], fields: map[string]string{}}
		for _, kv := range f[3:] {
			k, val, _ := strings.Cut(kv, "=")
			r.fields[k] = val
		}
		recs = append(recs, r)
	}
	return recs
}

// axEnvFileConsumer is the consumer half of the env-file recipe of
// docs/calling-adobe-apis.md, word for word but for the file's path.
const axEnvFileConsumer = `set -a; . "$ADOBE_ENV_FILE"; set +a
curl -sS --fail-with-body -X POST "$FIREFLY_API/v3/images/generate" \
  -H "Authorization: Bearer $ADOBE_ACCESS_TOKEN" \
  -H "x-api-key: $ADOBE_API_KEY" \
  -H "Content-Type: application/json" \
  -d '{"prompt":"a lighthouse at dusk"}'
`

// TestAgentTemplateEnvFile: Vault Agent renders both headers' values from one
// creds read into an env file, and a shell that sources it calls the API
// stand-in successfully.
func TestAgentTemplateEnvFile(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")

	dir := t.TempDir()
	envFile := filepath.Join(dir, "adobe.env")
	// The env-file recipe of docs/calling-adobe-apis.md, with this test's paths.
	hcl := v.agentConfig(t, dir, v.appToken("firefly"), fmt.Sprintf(`template {
  destination = %q
  perms       = "0600"
  contents    = <<EOT
{{ with secret "adobe/creds/firefly" -}}
ADOBE_ACCESS_TOKEN={{ .Data.access_token }}
ADOBE_API_KEY={{ .Data.client_id }}
{{ end -}}
EOT
}
`, envFile))
	agentDone := startVaultProcess(t, dir, "agent", hcl)

	env := map[string]string{}
	eventually(t, 30*time.Second, "the agent to render "+envFile, func() error {
		select {
		case err := <-agentDone:
			t.Fatalf("vault agent exited: %v", err)
		default:
		}
		b, err := os.ReadFile(envFile)
		if err != nil {
			return err
		}
		clear(env)
		for _, line := range strings.Split(string(b), "\n") {
			if k, val, ok := strings.Cut(line, "="); ok {
				env[k] = val
			}
		}
		if env["ADOBE_ACCESS_TOKEN"] == "" || env["ADOBE_API_KEY"] == "" {
			return fmt.Errorf("rendered %d bytes without both variables: keys %q", len(b), slices.Collect(maps.Keys(env)))
		}
		return nil
	})
	if len(env) != 2 || env["ADOBE_API_KEY"] != testClientID || !emu.TokenValid(env["ADOBE_ACCESS_TOKEN"]) {
		t.Fatalf("the env file holds %d variables, ADOBE_API_KEY %q (want %q), a token valid at IMS: %v",
			len(env), env["ADOBE_API_KEY"], testClientID, emu.TokenValid(env["ADOBE_ACCESS_TOKEN"]))
	}
	if st, err := os.Stat(envFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("the env file's mode: %v (%v); want 0600", st.Mode(), err)
	}
	got := callAdobeAPI(t, emu, env["ADOBE_ACCESS_TOKEN"], env["ADOBE_API_KEY"])
	t.Logf("Agent env file: API stand-in %d", got.status)
	if got.status != 200 {
		t.Errorf("API call with the env file's values: %d %s", got.status, got.body)
	}

	requireTools(t, "sh", "curl")
	before := emu.Stats().APIAccepted
	sh := exec.Command("sh", "-ec", axEnvFileConsumer)
	sh.Env = append(os.Environ(), "ADOBE_ENV_FILE="+envFile, "FIREFLY_API="+emu.URL)
	out, err := sh.CombinedOutput()
	accepted := emu.Stats().APIAccepted - before
	t.Logf("Agent env file, sourced by sh and sent by curl: exit %v, API stand-in accepted %d call(s)", err, accepted)
	if err != nil || accepted != 1 || !strings.Contains(string(out), `"outputs"`) {
		t.Errorf("the recipe's consumer: %v, %d call(s) accepted\n%s", err, accepted, out)
	}
}
