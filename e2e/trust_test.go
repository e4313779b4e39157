package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// The trust boundary of adobe/config: whoever may update config but does not
// know the client secret must not be able to send the stored secret, or a
// token minted with it, anywhere new. A write that changes client_id, ims_url
// or io_management_url must therefore carry client_secret; otherwise it is
// refused with a 400 that names the rule, and nothing is stored or sent.

const trOtherClientID = "e2e-other-client-id"

// trHost is an IMS emulator on its own loopback port that also records every
// HTTP request reaching it, on any path: the emulator's Stats count only the
// endpoints it knows.
type trHost struct {
	*emulator
	name string

	mu   sync.Mutex
	seen []string // "METHOD /path" of every request, in order
}

// trStartHost starts an emulator of the test credential (it accepts
// testClientID and testClientSecret) behind a recording handler.
func trStartHost(t *testing.T, name string) *trHost {
	t.Helper()
	h := &trHost{name: name, emulator: &emulator{Emulator: newEmulator(0)}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.seen = append(h.seen, r.Method+" "+r.URL.Path)
		h.mu.Unlock()
		h.Emulator.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

// requests returns every request the host has received so far.
func (h *trHost) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

// trRun is one Vault dev server with the plugin mounted at adobe/ and a file
// audit device, the hosts a test plays IMS with, and a transcript of every
// response a test received except creds reads (which carry a token by design).
type trRun struct {
	t         *testing.T
	v         *vaultServer
	hosts     []*trHost
	auditPath string

	transcript strings.Builder
}

func trStart(t *testing.T, hosts ...*trHost) *trRun {
	t.Helper()
	r := &trRun{t: t, v: startVault(t, vaultOptions{}), hosts: hosts, auditPath: filepath.Join(t.TempDir(), "audit.log")}
	r.v.mustCLI("audit", "enable", "file", "file_path="+r.auditPath)
	r.v.mountPlugin()
	return r
}

// cli runs the vault CLI as root, feeding stdin, and keeps its output.
func (r *trRun) cli(stdin string, args ...string) (string, error) {
	r.t.Helper()
	out, err := r.v.cliAs(r.v.token, stdin, args...)
	r.transcript.WriteString(out + "\n")
	return out, err
}

func (r *trRun) mustCLI(stdin string, args ...string) string {
	r.t.Helper()
	out, err := r.cli(stdin, args...)
	if err != nil {
		r.t.Fatalf("vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// configure stores the test credential with h as IMS and as I/O Management
// API, and the org and credential IDs rotation needs, through the CLI with the
// secret on stdin.
func (r *trRun) configure(h *trHost) {
	r.t.Helper()
	r.mustCLI(testClientSecret, "write", "adobe/config", "client_id="+testClientID, "client_secret=-",
		"scopes="+fireflyScopes, "ims_url="+h.URL, "io_management_url="+h.URL,
		"org_id="+imsemu.DefaultOrgID, "credential_id="+imsemu.DefaultCredentialID)
}

// config reads adobe/config through the CLI (cli) or the HTTP API.
func (r *trRun) config(cli bool) map[string]any {
	r.t.Helper()
	if !cli {
		s, err := r.v.client.Logical().Read("adobe/config")
		if err != nil || s == nil {
			r.t.Fatalf("API read adobe/config: %v, %v", s, err)
		}
		b, _ := json.Marshal(s.Data)
		r.transcript.Write(b)
		return s.Data
	}
	out := r.mustCLI("", "read", "-format=json", "adobe/config")
	var s api.Secret
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		r.t.Fatalf("vault read adobe/config: output is not a JSON secret: %v\n%s", err, out)
	}
	return s.Data
}

// creds reads a creds path through the CLI and returns its access token,
// which must be valid at want. Its output is kept out of the transcript: it
// carries the token on purpose.
func (r *trRun) creds(path string, want *trHost) string {
	r.t.Helper()
	out, err := r.v.cliAs(r.v.token, "", "read", "-format=json", path)
	if err != nil {
		r.t.Fatalf("vault read %s: %v\n%s", path, err, out)
	}
	rtCheckNoSecrets(r.t, "vault read "+path, out)
	var s api.Secret
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		r.t.Fatalf("vault read %s: output is not a JSON secret: %v\n%s", path, err, out)
	}
	tok, err := lcCheckCreds(&s, want.emulator)
	if err != nil {
		r.t.Fatalf("vault read %s: %v (want a token of the %s emulator)", path, err, want.name)
	}
	return tok
}

// counts is how many requests each host has received so far.
func (r *trRun) counts() []int {
	n := make([]int, len(r.hosts))
	for i, h := range r.hosts {
		n[i] = len(h.requests())
	}
	return n
}

// checkNothingSent fails the test if any host received a request since before.
func (r *trRun) checkNothingSent(what string, before []int) {
	r.t.Helper()
	for i, h := range r.hosts {
		if got := h.requests(); len(got) > before[i] {
			r.t.Errorf("%s: the %s emulator (%s) received %v", what, h.name, h.URL, got[before[i]:])
		}
	}
}

var trCLICode = regexp.MustCompile(`Code: (\d+)`)

// trAPIStatus returns the status and messages of a Vault API error.
func trAPIStatus(err error) (int, string) {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return 0, fmt.Sprint(err)
	}
	return re.StatusCode, strings.Join(re.Errors, "; ")
}

// refusal is what a write that must be refused returned.
type refusal struct {
	what   string
	err    error  // nil if the write succeeded
	status int    // HTTP status of the refusal
	msg    string // its message (the CLI's whole output)
}

func (r *trRun) cliRefusal(what, stdin string, args ...string) refusal {
	r.t.Helper()
	out, err := r.cli(stdin, args...)
	rf := refusal{what: "vault " + what, err: err, msg: out}
	if m := trCLICode.FindStringSubmatch(out); m != nil {
		rf.status, _ = strconv.Atoi(m[1])
	}
	return rf
}

func (r *trRun) apiRefusal(what string, write func() (*api.Secret, error)) refusal {
	r.t.Helper()
	s, err := write()
	rf := refusal{what: "API " + what, err: err}
	if err != nil {
		rf.status, rf.msg = trAPIStatus(err)
	} else if s != nil {
		b, _ := json.Marshal(s)
		rf.msg = string(b)
	}
	r.transcript.WriteString(rf.msg + "\n")
	return rf
}

// checkRefused asserts that a write was refused with status (0: any error
// status), that its message contains every string of want, that no host
// received any request meanwhile, and that the stored config is still
// cfgBefore.
func (r *trRun) checkRefused(rf refusal, status int, before []int, cfgBefore map[string]any, want ...string) {
	r.t.Helper()
	switch {
	case rf.err == nil:
		r.t.Errorf("%s succeeded, want it refused:\n%s", rf.what, rf.msg)
	case status != 0 && rf.status != status:
		r.t.Errorf("%s: HTTP %d, want %d:\n%s", rf.what, rf.status, status, rf.msg)
	case status == 0 && rf.status < 400:
		r.t.Errorf("%s: no HTTP error status in:\n%s", rf.what, rf.msg)
	}
	if rf.err != nil {
		for _, w := range want {
			if !strings.Contains(rf.msg, w) {
				r.t.Errorf("%s: the error does not name %q:\n%s", rf.what, w, rf.msg)
			}
		}
	}
	r.checkNothingSent(rf.what, before)
	if got := r.config(false); !reflect.DeepEqual(got, cfgBefore) {
		r.t.Errorf("%s changed the stored config:\n got %v\nwant %v", rf.what, got, cfgBefore)
	}
}

// checkNoLeaks stops the server, then searches its log (which holds the
// plugin's output), the audit log and every response kept for the client
// secret, any secret a rotation created, and every token any host issued.
func (r *trRun) checkNoLeaks() {
	r.t.Helper()
	r.v.stop()
	serverLog := r.v.logText()
	if !strings.Contains(serverLog, pluginCommand(pluginVersions[0])) {
		r.t.Errorf("the server log does not mention the plugin, so it may not capture the plugin's output")
	}
	b, err := os.ReadFile(r.auditPath)
	if err != nil {
		r.t.Fatalf("reading the audit log: %v", err)
	}
	audit := string(b)
	if !strings.Contains(audit, `"adobe/config"`) || !strings.Contains(audit, `"access_token":"hmac-sha256:`) {
		r.t.Errorf("the audit log (%d bytes) has no config write or creds read, so searching it proves nothing", len(audit))
	}
	transcript := r.transcript.String()
	if !strings.Contains(transcript, "client_secret") {
		r.t.Errorf("the transcript of responses holds no refusal naming client_secret, so searching it proves nothing")
	}

	secrets := map[string]string{"the client secret": testClientSecret}
	issued := 0
	for _, h := range r.hosts {
		for i, tok := range h.Tokens() {
			issued++
			secrets[fmt.Sprintf("token %d of the %s emulator", i, h.name)] = tok.AccessToken
			// The random signature alone identifies a token: catch truncated copies too.
			if parts := strings.Split(tok.AccessToken, "."); len(parts) == 3 && len(parts[2]) >= 32 {
				secrets[fmt.Sprintf("the signature of token %d of the %s emulator", i, h.name)] = parts[2][:32]
			}
		}
	}
	if issued == 0 {
		r.t.Fatal("no emulator issued a token, so searching for tokens proves nothing")
	}
	for where, text := range map[string]string{"the server log": serverLog, "the audit log": audit, "a response": transcript} {
		for what, s := range secrets {
			if strings.Contains(text, s) {
				r.t.Errorf("%s contains %s in plain text", where, what)
			}
		}
		if rtEmulatorSecret.MatchString(text) {
			r.t.Errorf("%s contains a client secret a rotation created", where)
		}
	}
}

// TestTrustURLChangesNeedTheSecret plays an operator who may update config
// but does not know the client secret, and runs an "attacker" emulator on
// another loopback port that would accept the secret. Pointing ims_url or
// io_management_url at it without client_secret, through the CLI and with
// verify=false too, is refused naming the rule: the attacker receives no
// request, not from the write, nor from later creds reads, nor from
// rotate-root, which goes to the configured host. With client_secret in the
// same write the move is allowed, and tokens are then minted at the new host.
func TestTrustURLChangesNeedTheSecret(t *testing.T) {
	home := trStartHost(t, "configured")
	attacker := trStartHost(t, "attacker")
	r := trStart(t, home, attacker)
	r.configure(home)
	// A dedicated role mints at IMS on every read, so a read shows where
	// tokens are minted now; the shared token of adobe/creds may be cached.
	r.mustCLI("", "write", "adobe/roles/fresh", "scopes=openid,AdobeID", "mode=dedicated")
	r.creds("adobe/creds", home)

	refuse := func(field string, extra ...string) {
		t.Helper()
		args := append([]string{"write", "adobe/config", field + "=" + attacker.URL}, extra...)
		before, cfg := r.counts(), r.config(false)
		rf := r.cliRefusal(strings.Join(args, " "), "", args...)
		r.checkRefused(rf, 400, before, cfg, "client_secret", field)
	}
	mintsAtHome := func(when string) string {
		t.Helper()
		before := home.Stats().TokenRequests
		tok := r.creds("adobe/creds/fresh", home)
		if home.Stats().TokenRequests == before {
			t.Errorf("%s: a dedicated read made no token request to the configured emulator", when)
		}
		r.creds("adobe/creds", home)
		return tok
	}
	checkConfigHome := func(when string) {
		t.Helper()
		cfg := r.config(true)
		if cfg["ims_url"] != home.URL || cfg["io_management_url"] != home.URL {
			t.Errorf("%s: vault read adobe/config shows ims_url %v io_management_url %v, want %s for both", when, cfg["ims_url"], cfg["io_management_url"], home.URL)
		}
	}

	// (a) ims_url: verify would post the stored secret to the new host, and
	// so would every later mint.
	refuse("ims_url")
	refuse("ims_url", "verify=false")
	checkConfigHome("after refusing ims_url")
	mintsAtHome("after refusing ims_url")
	if got := attacker.requests(); len(got) != 0 {
		t.Fatalf("the attacker emulator received %v", got)
	}

	// (b) io_management_url: rotate-root would hand the new host a token
	// that manages the credential's secrets.
	refuse("io_management_url")
	refuse("io_management_url", "verify=false")
	before, cfg := r.counts(), r.config(false)
	args := []string{"write", "adobe/config", "ims_url=" + attacker.URL, "io_management_url=" + attacker.URL, "verify=false"}
	r.checkRefused(r.cliRefusal(strings.Join(args, " "), "", args...), 400, before, cfg, "client_secret", "ims_url", "io_management_url")
	checkConfigHome("after refusing io_management_url")

	original := home.Secrets()
	if len(original) != 1 {
		t.Fatalf("the configured emulator has %d secrets before rotation, want 1", len(original))
	}
	mgmtBefore := home.Stats().ManagementRequests
	out, err := r.cli("", "write", "-f", "-format=json", "adobe/config/rotate-root")
	if got := attacker.requests(); len(got) != 0 {
		t.Fatalf("vault write -f adobe/config/rotate-root: the attacker emulator received %v", got)
	}
	if err != nil {
		t.Fatalf("vault write -f adobe/config/rotate-root: %v\n%s", err, out)
	}
	var rot api.Secret
	if err := json.Unmarshal([]byte(out), &rot); err != nil {
		t.Fatalf("rotate-root output is not JSON: %v\n%s", err, out)
	}
	uuid, _ := rot.Data["client_secret_uuid"].(string)
	if got := home.Secrets(); len(got) != 1 || got[0].UUID != uuid || uuid == original[0].UUID {
		t.Errorf("after rotate-root the configured emulator has secrets %v, want only the new %q (not %q)", got, uuid, original[0].UUID)
	}
	if home.Stats().ManagementRequests == mgmtBefore {
		t.Error("rotate-root made no I/O Management API request to the configured emulator")
	}
	if tok := mintsAtHome("after rotate-root"); rtSecretOf(home.emulator, tok) != uuid {
		t.Errorf("after rotate-root a new token was not minted with the new secret %s", uuid)
	}

	// (c) Whoever gives the secret may move it: the write verifies at the
	// new host, and every later mint goes there.
	homeBefore := len(home.requests())
	r.mustCLI(testClientSecret, "write", "adobe/config", "client_secret=-", "ims_url="+attacker.URL, "io_management_url="+attacker.URL)
	cfg = r.config(true)
	if cfg["ims_url"] != attacker.URL || cfg["io_management_url"] != attacker.URL {
		t.Errorf("after a write with client_secret, config shows ims_url %v io_management_url %v, want %s", cfg["ims_url"], cfg["io_management_url"], attacker.URL)
	}
	if n := attacker.Stats().TokenRequests; n != 1 {
		t.Errorf("the write with client_secret made %d token requests to the new host, want 1 (verify)", n)
	}
	r.creds("adobe/creds/fresh", attacker)
	if n := attacker.Stats().TokenRequests; n != 2 {
		t.Errorf("after a dedicated read the new host has seen %d token requests, want 2", n)
	}
	r.creds("adobe/creds", attacker)
	if got := home.requests(); len(got) != homeBefore {
		t.Errorf("after moving to the new host the configured emulator still received %v", got[homeBefore:])
	}

	t.Run("NoSecretInLogsOrResponses", func(t *testing.T) {
		r.t = t
		r.checkNoLeaks()
	})
}

// trGuardedFields reads Vault's OpenAPI document and returns the fields of
// adobe/config that say where, or as whom, the client secret is used: client_id
// and every URL field (named *_url, or with a URL as default). It fails if the
// document has none of them, or if another path of the plugin takes such a
// field, which this rule would not guard.
func trGuardedFields(t *testing.T, v *vaultServer) []string {
	t.Helper()
	doc, err := v.client.Logical().Read("sys/internal/specs/openapi")
	if err != nil || doc == nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	paths, _ := doc.Data["paths"].(map[string]any)
	components, _ := doc.Data["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	properties := func(path string) map[string]any {
		item, _ := paths[path].(map[string]any)
		post, _ := item["post"].(map[string]any)
		body, _ := post["requestBody"].(map[string]any)
		content, _ := body["content"].(map[string]any)
		media, _ := content["application/json"].(map[string]any)
		schema, _ := media["schema"].(map[string]any)
		if ref, ok := schema["$ref"].(string); ok {
			schema, _ = schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
		} else if id, _ := post["operationId"].(string); id != "" && len(schema) == 0 {
			// Vault's API answer drops the $ref; the schema is named after
			// the operation: adobe-ims-write-configuration ->
			// AdobeImsWriteConfigurationRequest.
			var name strings.Builder
			for w := range strings.SplitSeq(id, "-") {
				if w != "" {
					name.WriteString(strings.ToUpper(w[:1]) + w[1:])
				}
			}
			schema, _ = schemas[name.String()+"Request"].(map[string]any)
		}
		props, _ := schema["properties"].(map[string]any)
		return props
	}
	isGuarded := func(name string, prop any) bool {
		p, _ := prop.(map[string]any)
		def, _ := p["default"].(string)
		return name == "client_id" || strings.HasSuffix(name, "_url") || strings.Contains(def, "://") || p["format"] == "uri"
	}

	props := properties("/adobe/config")
	if _, ok := props["client_secret"]; !ok {
		t.Fatalf("the OpenAPI document shows no client_secret field for adobe/config (fields %v)", slices.Sorted(maps.Keys(props)))
	}
	var guarded []string
	for name, p := range props {
		if isGuarded(name, p) {
			guarded = append(guarded, name)
		}
	}
	slices.Sort(guarded)
	for _, want := range []string{"client_id", "ims_url", "io_management_url"} {
		if !slices.Contains(guarded, want) {
			t.Fatalf("the fields found %v lack %s", guarded, want)
		}
	}
	for path := range paths {
		if !strings.HasPrefix(path, "/adobe/") || path == "/adobe/config" {
			continue
		}
		for name, p := range properties(path) {
			if isGuarded(name, p) || name == "client_secret" {
				t.Errorf("%s takes %s, which the trust rule of adobe/config does not guard: cover it here", path, name)
			}
		}
	}
	return guarded
}

// trNewValue is a value for a guarded field that differs from the stored
// one: another client ID, or the other host's URL.
func trNewValue(field string, other *trHost) string {
	if field == "client_id" {
		return trOtherClientID
	}
	return other.URL
}

// TestTrustEveryWhereOrWhoFieldNeedsTheSecret finds, in Vault's OpenAPI
// document, every config field that decides where or as whom the secret is
// used, and changes each without client_secret through the CLI and the HTTP
// API, with verify on and off, and by PATCH: every such write is refused
// (400, naming client_secret and the field, or PATCH unsupported), no
// emulator receives any request, and the stored config is unchanged. A write
// that gives a field its current value is not a change and is accepted, an
// empty client_secret does not count as giving it, and through the API a
// write carrying the secret moves the config to the other host.
func TestTrustEveryWhereOrWhoFieldNeedsTheSecret(t *testing.T) {
	home := trStartHost(t, "configured")
	other := trStartHost(t, "other")
	r := trStart(t, home, other)
	r.configure(home)
	r.creds("adobe/creds", home)

	fields := trGuardedFields(t, r.v)
	t.Logf("fields that need client_secret to change: %v", fields)
	current := r.config(false)
	for _, f := range fields {
		value := trNewValue(f, other)
		for _, verify := range []bool{true, false} {
			args := []string{"write", "adobe/config", f + "=" + value}
			data := map[string]any{f: value}
			if !verify {
				args = append(args, "verify=false")
				data["verify"] = false
			}
			before, cfg := r.counts(), r.config(false)
			r.checkRefused(r.cliRefusal(strings.Join(args, " "), "", args...), 400, before, cfg, "client_secret", f)

			before = r.counts()
			r.checkRefused(r.apiRefusal(fmt.Sprintf("write adobe/config %v", data), func() (*api.Secret, error) {
				return r.v.client.Logical().Write("adobe/config", data)
			}), 400, before, cfg, "client_secret", f)
		}

		// PATCH is another way to change a field: it must not get around the rule.
		before, cfg := r.counts(), r.config(false)
		r.checkRefused(r.apiRefusal("patch adobe/config "+f, func() (*api.Secret, error) {
			return r.v.client.Logical().JSONMergePatch(context.Background(), "adobe/config", map[string]any{f: value})
		}), 0, before, cfg)

		// An empty client_secret is no secret.
		before = r.counts()
		r.checkRefused(r.apiRefusal("write adobe/config "+f+" with an empty client_secret", func() (*api.Secret, error) {
			return r.v.client.Logical().Write("adobe/config", map[string]any{f: value, "client_secret": ""})
		}), 400, before, cfg, "client_secret")

		// The rule is about changes: the current value needs no secret.
		if cur, ok := current[f].(string); ok && cur != "" {
			before = r.counts()
			if _, err := r.v.client.Logical().Write("adobe/config", map[string]any{f: cur}); err != nil {
				t.Errorf("writing %s its current value %q without client_secret: %v", f, cur, err)
			}
			for i, h := range r.hosts {
				if got := h.requests(); h != home && len(got) > before[i] {
					t.Errorf("writing %s its current value: the %s emulator received %v", f, h.name, got[before[i]:])
				}
			}
		} else {
			t.Errorf("config read shows no %s: %v", f, current)
		}
	}

	// All at once, through the API.
	all := map[string]any{}
	for _, f := range fields {
		all[f] = trNewValue(f, other)
	}
	before, cfg := r.counts(), r.config(false)
	r.checkRefused(r.apiRefusal(fmt.Sprintf("write adobe/config %v", all), func() (*api.Secret, error) {
		return r.v.client.Logical().Write("adobe/config", all)
	}), 400, before, cfg, append([]string{"client_secret"}, fields...)...)
	r.creds("adobe/creds", home)

	// With the secret, through the API: the write verifies at the other host.
	homeBefore := len(home.requests())
	move := map[string]any{"client_secret": testClientSecret}
	for _, f := range fields {
		if f != "client_id" {
			move[f] = other.URL
		}
	}
	if s, err := r.v.client.Logical().Write("adobe/config", move); err != nil {
		t.Fatalf("API write adobe/config with client_secret and the other host's URLs: %v", err)
	} else if s != nil {
		b, _ := json.Marshal(s)
		r.transcript.Write(b)
	}
	got := r.config(false)
	for f, want := range move {
		if f != "client_secret" && got[f] != want {
			t.Errorf("after a write with client_secret, config %s = %v, want %v", f, got[f], want)
		}
	}
	if n := other.Stats().TokenRequests; n != 1 {
		t.Errorf("the write with client_secret made %d token requests to the other host, want 1 (verify)", n)
	}
	r.creds("adobe/creds", other)
	if got := home.requests(); len(got) != homeBefore {
		t.Errorf("after moving to the other host the configured emulator still received %v", got[homeBefore:])
	}

	t.Run("NoSecretInLogsOrResponses", func(t *testing.T) {
		r.t = t
		r.checkNoLeaks()
	})
}
