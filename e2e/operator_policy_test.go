package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// opPolicyName is the name docs/operations.md gives the operator policy.
const opPolicyName = "adobe-ims-operator"

// opOperatorPolicy is the operator policy of docs/operations.md, taken from
// its fenced hcl block so that the document and this test cannot drift.
func opOperatorPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, m := range regexp.MustCompile("(?s)```hcl\n(.*?)```").FindAllStringSubmatch(string(b), -1) {
		if strings.HasPrefix(m[1], "# policy \""+opPolicyName+"\"\n") {
			found = append(found, m[1])
		}
	}
	if len(found) != 1 {
		t.Fatalf("docs/operations.md has %d hcl blocks starting with # policy %q, want 1", len(found), opPolicyName)
	}
	return found[0]
}

// opHost is an IMS emulator of the test credential on its own loopback port
// that records every request reaching it, and every client secret and access
// token that crossed it in either direction: the secrets the plugin sent in
// token requests, the secrets the I/O Management API created, the tokens IMS
// answered with.
type opHost struct {
	*emulator
	name string

	mu      sync.Mutex
	seen    []string          // "METHOD /path" of every request, in order
	secrets map[string]bool   // every client secret value seen
	created map[string]string // uuid -> value of each secret the management API created
	tokens  map[string]bool   // every access_token value answered
}

// opTee passes a response through and keeps a copy of its body.
type opTee struct {
	http.ResponseWriter
	body bytes.Buffer
}

func (w *opTee) Write(b []byte) (int, error) {
	w.body.Write(b)
	return w.ResponseWriter.Write(b)
}

func (w *opTee) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func opStartHost(t *testing.T, name string) *opHost {
	t.Helper()
	h := &opHost{name: name, emulator: &emulator{Emulator: newEmulator(0)},
		secrets: map[string]bool{}, created: map[string]string{}, tokens: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(req))
		tee := &opTee{ResponseWriter: w}
		h.Emulator.ServeHTTP(tee, r)

		h.mu.Lock()
		defer h.mu.Unlock()
		h.seen = append(h.seen, r.Method+" "+r.URL.Path)
		for _, q := range []string{string(req), r.URL.RawQuery} {
			if f, err := url.ParseQuery(q); err == nil {
				for _, s := range f["client_secret"] {
					if s != "" {
						h.secrets[s] = true
					}
				}
			}
		}
		var answer map[string]any
		if json.Unmarshal(tee.body.Bytes(), &answer) == nil {
			if s, _ := answer["client_secret"].(string); s != "" {
				h.secrets[s] = true
				uuid, _ := answer["uuid"].(string)
				h.created[uuid] = s
			}
			if tok, _ := answer["access_token"].(string); tok != "" {
				h.tokens[tok] = true
			}
		}
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

func (h *opHost) requests() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.seen)
}

func (h *opHost) createdSecrets() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return maps.Clone(h.created)
}

// known returns every client secret and access token that crossed the host,
// and every token the emulator says it issued.
func (h *opHost) known() (secrets, tokens []string) {
	h.mu.Lock()
	for s := range h.secrets {
		secrets = append(secrets, s)
	}
	for tok := range h.tokens {
		tokens = append(tokens, tok)
	}
	h.mu.Unlock()
	for _, it := range h.Tokens() {
		if !slices.Contains(tokens, it.AccessToken) {
			tokens = append(tokens, it.AccessToken)
		}
	}
	return secrets, tokens
}

// opRun drives one Vault server as the operator: every response the operator
// received, through the CLI or the HTTP API, success or refusal, is kept in
// the transcript. Root's own requests are not.
type opRun struct {
	t          *testing.T
	v          *vaultServer
	token      string
	transcript strings.Builder
}

// cli runs the vault CLI with the operator token, feeding stdin.
func (o *opRun) cli(stdin string, args ...string) (string, error) {
	o.t.Helper()
	out, err := o.v.cliAs(o.token, stdin, args...)
	fmt.Fprintf(&o.transcript, "vault %s:\n%s\n", strings.Join(args, " "), out)
	return out, err
}

func (o *opRun) mustCLI(stdin string, args ...string) string {
	o.t.Helper()
	out, err := o.cli(stdin, args...)
	if err != nil {
		o.t.Fatalf("operator: vault %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// cliData runs a CLI command that must succeed with -format=json output and
// returns the secret's data.
func (o *opRun) cliData(args ...string) map[string]any {
	o.t.Helper()
	out := o.mustCLI("", args...)
	var s api.Secret
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		o.t.Fatalf("operator: vault %s: output is not a JSON secret: %v\n%s", strings.Join(args, " "), err, out)
	}
	return s.Data
}

// cliDenied runs a CLI command that the policy must refuse with 403.
func (o *opRun) cliDenied(stdin string, args ...string) {
	o.t.Helper()
	out, err := o.cli(stdin, args...)
	if err == nil {
		o.t.Errorf("operator: vault %s succeeded, want 403:\n%s", strings.Join(args, " "), out)
	} else if !strings.Contains(out, "Code: 403") || !strings.Contains(out, "permission denied") {
		o.t.Errorf("operator: vault %s: want 403 permission denied, got:\n%s", strings.Join(args, " "), out)
	}
}

// api sends one request to Vault's HTTP API with the operator token and
// returns the status and the body.
func (o *opRun) api(method, path string, body any) (int, []byte) {
	o.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			o.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, "http://"+o.v.addr+"/v1/"+path, rd)
	if err != nil {
		o.t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", o.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		o.t.Fatalf("operator: %s /v1/%s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatalf("operator: %s /v1/%s: reading the body: %v", method, path, err)
	}
	fmt.Fprintf(&o.transcript, "%s /v1/%s: %d\n%s\n", method, path, resp.StatusCode, b)
	return resp.StatusCode, b
}

// apiData sends a request that must succeed (200 or 204) and returns the
// response's data, if any.
func (o *opRun) apiData(method, path string, body any) map[string]any {
	o.t.Helper()
	status, b := o.api(method, path, body)
	if status != http.StatusOK && status != http.StatusNoContent {
		o.t.Fatalf("operator: %s /v1/%s: HTTP %d, want 200 or 204:\n%s", method, path, status, b)
	}
	if status == http.StatusNoContent {
		return nil
	}
	var s api.Secret
	if err := json.Unmarshal(b, &s); err != nil {
		o.t.Fatalf("operator: %s /v1/%s: body is not a JSON secret: %v\n%s", method, path, err, b)
	}
	return s.Data
}

// apiRefused sends a request that must be refused with status and returns
// its errors.
func (o *opRun) apiRefused(status int, method, path string, body any) string {
	o.t.Helper()
	got, b := o.api(method, path, body)
	if got != status {
		o.t.Errorf("operator: %s /v1/%s: HTTP %d, want %d:\n%s", method, path, got, status, b)
	}
	var e struct {
		Errors []string `json:"errors"`
	}
	_ = json.Unmarshal(b, &e)
	msg := strings.Join(e.Errors, "; ")
	if got == status && status == http.StatusForbidden && !strings.Contains(msg, "permission denied") {
		o.t.Errorf("operator: %s /v1/%s: 403 without \"permission denied\": %s", method, path, b)
	}
	return msg
}

// opRootConfig reads adobe/config with the root token.
func opRootConfig(t *testing.T, v *vaultServer) map[string]any {
	t.Helper()
	s, err := v.client.Logical().Read("adobe/config")
	if err != nil || s == nil {
		t.Fatalf("root read adobe/config: %v, %v", s, err)
	}
	return s.Data
}

// opCheckConfigRead checks a config read the operator got: the settings, and
// no client_secret field.
func opCheckConfigRead(t *testing.T, what string, data map[string]any, home *opHost) {
	t.Helper()
	if _, ok := data["client_secret"]; ok {
		t.Errorf("%s returns a client_secret field: %v", what, data)
	}
	if data["client_id"] != testClientID || data["ims_url"] != home.URL || data["io_management_url"] != home.URL {
		t.Errorf("%s: client_id %v ims_url %v io_management_url %v, want %s and %s", what, data["client_id"], data["ims_url"], data["io_management_url"], testClientID, home.URL)
	}
}

// TestOperatorPolicyManagesTheEngineButNeverLearnsASecret runs requests,
// through the vault CLI and the HTTP API, under a token whose only policies
// are default and the operator policy exactly as docs/operations.md states
// it (read from the document). The operator writes the config with a client
// secret, reads and updates it, creates, reads, lists, updates and deletes
// roles, rotates the secret twice, reads info and metrics, and revokes the
// creds leases of a role by prefix: all succeed. It is refused with 403
// reading adobe/creds and adobe/creds/<role> (and IMS receives nothing),
// sys/raw (enabled, and readable by root), enabling an audit device, and
// granting itself more. Moving ims_url or io_management_url to another IMS
// emulator without client_secret is refused with 400, the other emulator
// receives nothing, and the config is unchanged. Finally no client secret
// either emulator knows (the original, each secret rotation created, each
// secret the plugin sent) and no token either issued appears in any response
// the operator received, nor anything shaped like a rotated secret.
func TestOperatorPolicyManagesTheEngineButNeverLearnsASecret(t *testing.T) {
	home := opStartHost(t, "configured")
	other := opStartHost(t, "other")
	v := startVault(t, vaultOptions{extraConfig: "raw_storage_endpoint = true"})
	v.mountPlugin()

	policy := opOperatorPolicy(t)
	if out, err := v.cliAs(v.token, policy, "policy", "write", opPolicyName, "-"); err != nil {
		t.Fatalf("vault policy write %s -: %v\n%s", opPolicyName, err, out)
	}
	tok, err := v.client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{opPolicyName}, TTL: "1h"})
	if err != nil || tok == nil || tok.Auth == nil {
		t.Fatalf("creating the operator token: %v, %+v", err, tok)
	}
	if got := slices.Sorted(slices.Values(tok.Auth.Policies)); !slices.Equal(got, []string{opPolicyName, "default"}) {
		t.Fatalf("the operator token has policies %v, want only %s and default", got, opPolicyName)
	}
	op := &opRun{t: t, v: v, token: tok.Auth.ClientToken}
	originalUUID := home.Secrets()[0].UUID

	// The operator writes the credential, the secret on stdin; the write
	// verifies it by minting one token at the configured host.
	op.mustCLI(testClientSecret, "write", "adobe/config", "client_id="+testClientID, "client_secret=-",
		"scopes="+fireflyScopes, "ims_url="+home.URL, "io_management_url="+home.URL,
		"org_id="+imsemu.DefaultOrgID, "credential_id="+imsemu.DefaultCredentialID)
	if n := home.Stats().TokenRequests; n != 1 {
		t.Errorf("the operator's config write made %d token requests to the configured host, want 1 (verify)", n)
	}

	// It reads the config back, through the CLI and the API: no client_secret.
	opCheckConfigRead(t, "operator: vault read adobe/config", op.cliData("read", "-format=json", "adobe/config"), home)
	opCheckConfigRead(t, "operator: GET /v1/adobe/config", op.apiData(http.MethodGet, "adobe/config", nil), home)

	// It updates fields that need no secret, through the CLI and the API.
	op.mustCLI("", "write", "adobe/config", "max_concurrent_ims_requests=3")
	op.apiData(http.MethodPut, "adobe/config", map[string]any{"persist_tokens": false})
	cfg := opRootConfig(t, v)
	if ctInt(t, cfg["max_concurrent_ims_requests"], "max_concurrent_ims_requests") != 3 || cfg["persist_tokens"] != false {
		t.Errorf("after the operator's updates config shows max_concurrent_ims_requests %v persist_tokens %v, want 3 and false", cfg["max_concurrent_ims_requests"], cfg["persist_tokens"])
	}
	if cfg["client_id"] != testClientID || cfg["ims_url"] != home.URL {
		t.Errorf("the operator's updates changed client_id or ims_url: %v", cfg)
	}

	// Roles: create, read, update, list, delete, through the CLI and the API.
	op.mustCLI("", "write", "adobe/roles/firefly", "scopes="+ctScopesFirefly)
	op.mustCLI("", "write", "adobe/roles/scratch-cli", "scopes=openid")
	op.apiData(http.MethodPut, "adobe/roles/ded", map[string]any{"scopes": "openid,AdobeID", "mode": "dedicated"})
	op.apiData(http.MethodPut, "adobe/roles/orgs", map[string]any{"scopes": ctScopesOrgs})
	op.apiData(http.MethodPut, "adobe/roles/scratch-api", map[string]any{"scopes": "openid"})
	if r := op.cliData("read", "-format=json", "adobe/roles/firefly"); !slices.Equal(slices.Sorted(slices.Values(ctStrings(t, r["scopes"], "scopes"))), ctSortedScopes(ctScopesFirefly)) || r["mode"] != "shared" {
		t.Errorf("operator: vault read adobe/roles/firefly: %v", r)
	}
	if r := op.apiData(http.MethodGet, "adobe/roles/ded", nil); r["mode"] != "dedicated" {
		t.Errorf("operator: GET /v1/adobe/roles/ded: %v", r)
	}
	op.apiData(http.MethodPut, "adobe/roles/firefly", map[string]any{"ttl": "5m"})
	if r := op.cliData("read", "-format=json", "adobe/roles/firefly"); ctInt(t, r["ttl"], "ttl") != 300 || len(ctStrings(t, r["scopes"], "scopes")) != 4 {
		t.Errorf("operator: after setting ttl=5m, adobe/roles/firefly reads %v", r)
	}
	want := []string{"ded", "firefly", "orgs", "scratch-api", "scratch-cli"}
	var listed []string
	if out := op.mustCLI("", "list", "-format=json", "adobe/roles"); json.Unmarshal([]byte(out), &listed) != nil || !slices.Equal(slices.Sorted(slices.Values(listed)), want) {
		t.Errorf("operator: vault list -format=json adobe/roles: %s, want %v", out, want)
	}
	op.mustCLI("", "delete", "adobe/roles/scratch-cli")
	op.apiData(http.MethodDelete, "adobe/roles/scratch-api", nil)
	want = []string{"ded", "firefly", "orgs"}
	if got := ctStrings(t, op.apiData("LIST", "adobe/roles", nil)["keys"], "keys"); !slices.Equal(slices.Sorted(slices.Values(got)), want) {
		t.Errorf("operator: LIST /v1/adobe/roles after two deletes: %v, want %v", got, want)
	}
	for _, r := range []string{"scratch-cli", "scratch-api"} {
		if s, err := v.client.Logical().Read("adobe/roles/" + r); err != nil || s != nil {
			t.Errorf("root read adobe/roles/%s after the operator deleted it: %v, %v", r, s, err)
		}
	}

	// Applications (root here) read tokens, so that there are tokens for the
	// operator not to see: a shared one, which info describes, and a
	// dedicated one, held by a lease.
	rtAccessToken(t, v, "adobe/creds/firefly")
	dedTok := rtAccessToken(t, v, "adobe/creds/ded")

	// The operator rotates the secret, through the CLI, then the API. Each
	// response names uuids and times, and the secret only the plugin knows
	// is the one in use.
	rotate := func(what string, data map[string]any, previous string) string {
		t.Helper()
		uuid, _ := data["client_secret_uuid"].(string)
		if uuid == "" || uuid == previous || data["previous_client_secret_uuid"] != previous || data["previous_client_secret_deleted"] != true {
			t.Errorf("%s: client_secret_uuid %q previous %v deleted %v, want a new uuid and %s deleted", what, uuid, data["previous_client_secret_uuid"], data["previous_client_secret_deleted"], previous)
		}
		if got := home.Secrets(); len(got) != 1 || got[0].UUID != uuid {
			t.Errorf("%s: the emulator has secrets %v, want only %q", what, got, uuid)
		}
		if value, ok := home.createdSecrets()[uuid]; !ok || !home.SecretAccepted(value) {
			t.Errorf("%s: the value of the new secret %s was not seen crossing the emulator, or is not accepted", what, uuid)
		}
		return uuid
	}
	first := rotate("operator: vault write -f adobe/config/rotate-root", op.cliData("write", "-f", "-format=json", "adobe/config/rotate-root"), originalUUID)
	second := rotate("operator: PUT /v1/adobe/config/rotate-root", op.apiData(http.MethodPut, "adobe/config/rotate-root", nil), first)
	if home.SecretAccepted(testClientSecret) {
		t.Error("after rotation IMS still accepts the secret the operator wrote")
	}
	if got := op.cliData("read", "-format=json", "adobe/config"); got["client_secret_uuid"] != second {
		t.Errorf("operator: config read after rotation shows client_secret_uuid %v, want %s", got["client_secret_uuid"], second)
	} else {
		opCheckConfigRead(t, "operator: vault read adobe/config after rotation", got, home)
	}

	// It watches: info shows the shared token's state, metrics are Prometheus text.
	for what, info := range map[string]map[string]any{
		"vault read adobe/info": op.cliData("read", "-format=json", "adobe/info"),
		"GET /v1/adobe/info":    op.apiData(http.MethodGet, "adobe/info", nil),
	} {
		if st, _ := info["shared_tokens"].([]any); len(st) == 0 || info["client_id"] != testClientID {
			t.Errorf("operator: %s shows no shared token state or no client_id: %v", what, info)
		}
	}
	if status, body := op.api(http.MethodGet, "adobe/metrics", nil); status != http.StatusOK || !strings.Contains(string(body), "# TYPE") {
		t.Errorf("operator: GET /v1/adobe/metrics: HTTP %d, want 200 with Prometheus text:\n%s", status, body)
	}

	// The trust rule: without client_secret the operator cannot point the
	// stored secret, or a token minted with it, at another host.
	for _, field := range []string{"ims_url", "io_management_url"} {
		for _, verify := range []bool{true, false} {
			args := []string{"write", "adobe/config", field + "=" + other.URL}
			body := map[string]any{field: other.URL}
			if !verify {
				args = append(args, "verify=false")
				body["verify"] = false
			}
			before, homeBefore := len(other.requests()), len(home.requests())
			cfgBefore := opRootConfig(t, v)

			out, err := op.cli("", args...)
			switch {
			case err == nil:
				t.Errorf("operator: vault %s succeeded, want 400", strings.Join(args, " "))
			case !strings.Contains(out, "Code: 400") || !strings.Contains(out, "client_secret") || !strings.Contains(out, field):
				t.Errorf("operator: vault %s: want 400 naming client_secret and %s, got:\n%s", strings.Join(args, " "), field, out)
			}
			if msg := op.apiRefused(http.StatusBadRequest, http.MethodPut, "adobe/config", body); !strings.Contains(msg, "client_secret") || !strings.Contains(msg, field) {
				t.Errorf("operator: PUT /v1/adobe/config %v: the refusal does not name client_secret and %s: %s", body, field, msg)
			}
			if got := other.requests(); len(got) != before {
				t.Errorf("moving %s (verify=%v) was refused, yet the other host received %v", field, verify, got[before:])
			}
			if got := home.requests(); len(got) != homeBefore {
				t.Errorf("a refused move of %s (verify=%v) sent %v to the configured host", field, verify, got[homeBefore:])
			}
			if got := opRootConfig(t, v); !reflect.DeepEqual(got, cfgBefore) {
				t.Errorf("a refused move of %s (verify=%v) changed the config:\n got %v\nwant %v", field, verify, got, cfgBefore)
			}
		}
	}

	// No tokens for the operator: every creds path is refused and IMS hears
	// nothing. orgs has never been read and ded mints on every read, so an
	// allowed read would have reached IMS.
	before := home.Stats()
	homeBefore := len(home.requests())
	for _, p := range []string{"adobe/creds", "adobe/creds/firefly", "adobe/creds/ded", "adobe/creds/orgs"} {
		op.cliDenied("", "read", p)
		op.apiRefused(http.StatusForbidden, http.MethodGet, p, nil)
	}
	if got := home.requests(); len(got) != homeBefore {
		t.Errorf("refused creds reads sent %v to the configured host", got[homeBefore:])
	}
	if after := home.Stats(); after.TokenRequests != before.TokenRequests || after.TokensIssued != before.TokensIssued {
		t.Errorf("refused creds reads made %d token requests and %d tokens", after.TokenRequests-before.TokenRequests, after.TokensIssued-before.TokensIssued)
	}
	// The refusals came from the policy: root's reads mint, at the configured host.
	for _, p := range []string{"adobe/creds/orgs", "adobe/creds/ded"} {
		n := home.Stats().TokenRequests
		if tok := rtAccessToken(t, v, p); !home.TokenValid(tok) || home.Stats().TokenRequests == n {
			t.Errorf("root read %s did not mint a valid token at the configured host", p)
		}
	}

	// Nor through Vault itself: raw storage, audit devices, its own policy, tokens.
	mounts, err := v.client.Sys().ListMounts()
	if err != nil || mounts["adobe/"] == nil {
		t.Fatalf("root list mounts: %v, %v", mounts, err)
	}
	raw := "sys/raw/logical/" + mounts["adobe/"].UUID + "/config"
	if s, err := v.client.Logical().Read(raw); err != nil || s == nil || s.Data["value"] == nil {
		t.Fatalf("root read %s: %v, %v: the raw endpoint must be on for its refusal to mean anything", raw, s, err)
	}
	op.cliDenied("", "read", raw)
	op.apiRefused(http.StatusForbidden, http.MethodGet, raw, nil)
	op.apiRefused(http.StatusForbidden, "LIST", "sys/raw/logical/"+mounts["adobe/"].UUID+"/", nil)
	op.cliDenied("", "write", raw, "value={}")
	op.apiRefused(http.StatusForbidden, http.MethodPut, raw, map[string]any{"value": "{}"})
	auditDir := t.TempDir()
	op.cliDenied("", "audit", "enable", "-path=operator-cli", "file", "file_path="+filepath.Join(auditDir, "cli.log"))
	op.apiRefused(http.StatusForbidden, http.MethodPut, "sys/audit/operator-api",
		map[string]any{"type": "file", "options": map[string]any{"file_path": filepath.Join(auditDir, "api.log"), "log_raw": "true"}})
	if audits, err := v.client.Sys().ListAudit(); err != nil || len(audits) != 0 {
		t.Errorf("root list audit devices: %v, %v; want none", audits, err)
	}
	grant := `path "adobe/creds/*" { capabilities = ["read"] }`
	op.cliDenied(grant, "policy", "write", opPolicyName, "-")
	op.apiRefused(http.StatusForbidden, http.MethodPut, "sys/policies/acl/"+opPolicyName, map[string]any{"policy": grant})
	if got, err := v.client.Sys().GetPolicy(opPolicyName); err != nil || got != policy {
		t.Errorf("the operator policy changed: %q, %v", got, err)
	}
	op.cliDenied("", "token", "create", "-policy=root")

	// The documented policy lets the operator revoke a role's creds leases;
	// a dedicated token dies with its lease.
	op.mustCLI("", "lease", "revoke", "-sync", "-prefix", "adobe/creds/ded")
	eventually(t, 30*time.Second, "the dedicated token to be invalidated at IMS", func() error {
		if home.TokenValid(dedTok) {
			return fmt.Errorf("the dedicated token is still valid")
		}
		return nil
	})

	if got := other.requests(); len(got) != 0 {
		t.Errorf("the other host received %v", got)
	}

	t.Run("NoSecretOrTokenInAnyOperatorResponse", func(t *testing.T) {
		transcript := op.transcript.String()
		for _, marker := range []string{"client_secret_uuid", "shared_tokens", "# TYPE", "permission denied", "client_secret", other.URL} {
			if !strings.Contains(transcript, marker) {
				t.Errorf("the operator's responses lack %q, so searching them proves little", marker)
			}
		}

		created := home.createdSecrets()
		if len(created) != 2 || created[first] == "" || created[second] == "" {
			t.Errorf("the configured emulator created secrets %v, want the two rotations' %s and %s", slices.Sorted(maps.Keys(created)), first, second)
		}
		// Each secret, and each token's signature (its random part), is
		// searched for whole and in aligned 16-character pieces, so that any
		// copy of 31 characters or more is found, truncated or not.
		secrets := map[string]string{"the client secret the operator wrote": testClientSecret}
		random := map[string]string{"the client secret the operator wrote": testClientSecret}
		tokens := 0
		for _, h := range []*opHost{home, other} {
			ss, ts := h.known()
			for i, s := range ss {
				what := fmt.Sprintf("client secret %d seen by the %s emulator", i, h.name)
				secrets[what], random[what] = s, s
			}
			for i, tok := range ts {
				tokens++
				what := fmt.Sprintf("token %d of the %s emulator", i, h.name)
				secrets[what] = tok
				if parts := strings.Split(tok, "."); len(parts) == 3 && len(parts[2]) >= 32 {
					random["the signature of "+what] = parts[2]
				} else {
					t.Errorf("%s is not a JWT with a signature: %.40s...", what, tok)
				}
			}
		}
		// Verify, two rotations (a management token and a proof each), the
		// shared firefly token, two dedicated reads, the orgs token.
		if tokens < 8 {
			t.Errorf("the emulators issued %d tokens, want at least 8", tokens)
		}
		for uuid, value := range created {
			if !slices.Contains(slices.Collect(maps.Values(secrets)), value) {
				t.Errorf("the secret %s the emulator created is not among those searched for", uuid)
			}
		}
		for what, s := range secrets {
			if strings.Contains(transcript, s) {
				t.Errorf("a response the operator received contains %s", what)
			}
		}
		for what, s := range random {
			for i := 0; i+16 <= len(s); i += 16 {
				if strings.Contains(transcript, s[i:i+16]) {
					t.Errorf("a response the operator received contains characters %d-%d of %s", i, i+16, what)
					break
				}
			}
		}
		if rtEmulatorSecret.MatchString(transcript) {
			t.Error("a response the operator received contains something shaped like a rotated client secret")
		}
	})
}
