package adobeims

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// tlsSettingProblem says why a field name or description looks like a way
// to weaken how the plugin checks the certificates of IMS and the I/O
// Management API, or "" if it does not. Three kinds of setting would:
//
//   - one that turns verification off: insecure, skip_verify, tls_skip,
//     no_verify, disable_verification, insecure_skip_verify and the like;
//   - one that trusts a CA or a certificate of the operator's choosing:
//     ca_cert, ca_path, ca_bundle, root_ca, tls_ca, cert, pem, pinned, x509,
//     truststore. Whoever may write config could then trust a host of their
//     own, which is verification off for that host;
//   - any TLS or SSL setting at all (tls_*, ssl_*, *_tls): the plugin has
//     none, and one added must be looked at before this test is changed.
//
// "verify" alone is allowed: that field mints a token before saving (its
// description says so) and has nothing to do with TLS. A name that pairs it
// with a negation (no_verify, skip_verify, verify_off) is not.
func tlsSettingProblem(name string) string {
	lower := strings.ToLower(name)
	words := regexp.MustCompile(`[a-z0-9]+`).FindAllString(lower, -1)
	joined := strings.Join(words, "")
	for _, w := range words {
		switch w {
		case "tls", "ssl", "ca", "cas", "pem", "pin", "pinned", "pinning", "x509", "insecure":
			return fmt.Sprintf("it has the word %q", w)
		}
	}
	for _, s := range []string{"insecure", "skipverif", "noverif", "cert", "cacert", "capath", "cabundle", "rootca", "truststore", "trusted"} {
		if strings.Contains(joined, s) {
			return fmt.Sprintf("it contains %q", s)
		}
	}
	if strings.Contains(joined, "verif") {
		for _, w := range words {
			switch w {
			case "no", "not", "skip", "skips", "disable", "disabled", "off", "ignore", "without", "false", "dont":
				return fmt.Sprintf("it pairs verification with %q", w)
			}
		}
	}
	return ""
}

func TestTLSSettingProblemFlagsKnownNames(t *testing.T) {
	// The check itself, on names other plugins and tools use.
	for _, name := range []string{
		"insecure", "tls_skip_verify", "skip_verify", "insecure_skip_verify", "InsecureSkipVerify", "tls_insecure",
		"ca_cert", "ca_path", "ca_bundle", "tls_ca_cert", "root_ca", "client_cert", "certificate_pem", "pinned_cert",
		"ssl_verify", "verify_ssl", "verify_tls", "no_verify", "disable_verification", "skip_tls_verification", "truststore",
	} {
		if tlsSettingProblem(name) == "" {
			t.Errorf("%q is not recognised as a TLS setting", name)
		}
	}
	for _, name := range []string{keyVerify, keyClientSecret, keyScopes, keyMaxConcurrent, keyDisableAutomatedRotation, keyCredentialID, keyIMSURL} {
		if p := tlsSettingProblem(name); p != "" {
			t.Errorf("%q is taken for a TLS setting: %s", name, p)
		}
	}
}

// TestNoSettingTurnsTLSVerificationOff looks at every field of every path
// of the plugin, the config path's first, by name and by description, for
// a setting that turns TLS verification off or trusts a certificate of the
// operator's choosing (see tlsSettingProblem). Such a field, once written,
// would let whoever may update config have the secret sent to a host that
// only looks like IMS. And since config refuses fields it does not know,
// writing one of those names is refused and changes nothing.
func TestNoSettingTurnsTLSVerificationOff(t *testing.T) {
	e := newTestEnv(t)
	fields := 0
	for _, p := range e.b.Paths {
		for name, schema := range p.Fields {
			fields++
			if why := tlsSettingProblem(name); why != "" {
				t.Errorf("path %q has field %q, which looks like a TLS verification setting: %s", p.Pattern, name, why)
			}
			for _, word := range []string{"insecure", "tls", "ssl", "certificate", "skip verif", "verification off"} {
				if strings.Contains(strings.ToLower(schema.Description), word) {
					t.Errorf("path %q field %q mentions %q: %s", p.Pattern, name, word, schema.Description)
				}
			}
		}
	}
	if n := len(pathConfig(e.b).Fields); n < 10 || fields < n {
		t.Fatalf("walked %d fields, %d of them config's: the walk did not see the schema", fields, n)
	}

	e.configure(nil)
	before, err := getConfig(t.Context(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"insecure", "tls_skip_verify", "insecure_skip_verify", "skip_verify", "ca_cert", "tls_ca_cert", "verify_tls"} {
		value := any(true)
		if strings.Contains(name, "ca_") {
			value = "-----BEGIN CERTIFICATE-----"
		}
		resp, err := e.write("config", map[string]any{name: value, keyVerify: false})
		e.mustFail(resp, err, name)
	}
	after, err := getConfig(t.Context(), e.storage)
	if err != nil || !reflect.DeepEqual(before, after) {
		t.Fatalf("a refused write changed the stored config (%v)", err)
	}
}

// TestIMSClientsVerifyTLS builds the backend as Vault does (Factory, so with
// the production HTTP client), writes a config that sets every field the
// schema has, and then looks through every HTTP client the plugin builds
// from that config: the IMS client creds and verify use, and the I/O
// Management client rotation and its rollback build. Every http.Transport
// and tls.Config reachable from them must verify: no TLSClientConfig, or one
// without InsecureSkipVerify, and no TLS dialer of its own, which would
// bypass TLSClientConfig. Each client must reach at least one transport, so
// that a walk that finds nothing fails.
func TestIMSClientsVerifyTLS(t *testing.T) {
	ctx := t.Context()
	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	lb, err := Factory(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	b := lb.(*backend)
	t.Cleanup(func() { b.Clean(context.Background()) })

	// Two writes between them give every field a value: rotation_period and
	// rotation_schedule replace each other.
	writes := []map[string]any{
		{
			keyClientID: testClientID, keyClientSecret: testClientSecret, keyScopes: testScopes,
			keyIMSURL: "https://ims.example.com", keyIOManagementURL: "https://mgmt.example.com",
			keyOrgID: "1234ABCD@AdobeOrg", keyCredentialID: "cred-1", keyVerify: false,
			keyPersistTokens: false, keyMaxConcurrent: 8, keyRotationPeriod: "720h",
			keyRotationPolicy: "", keyDisableAutomatedRotation: false,
		},
		{
			keyClientSecret: testClientSecret, keyRotationSchedule: "0 3 * * *", keyRotationWindow: "2h",
			keyDisableAutomatedRotation: true, keyVerify: false, keyIMSURL: "https://ims-na1.adobelogin.com",
			keyIOManagementURL: "https://api.adobe.io",
		},
	}
	for name := range pathConfig(b).Fields {
		if !slices.ContainsFunc(writes, func(w map[string]any) bool { _, ok := w[name]; return ok }) {
			t.Fatalf("config field %q is not written by this test: give it a value", name)
		}
	}
	for i, data := range writes {
		req := &logical.Request{Operation: logical.UpdateOperation, Path: "config", Data: data, Storage: conf.StorageView, MountPoint: testMount}
		if i == 0 {
			req.Operation = logical.CreateOperation
		}
		resp, err := b.HandleRequest(ctx, req)
		if err != nil {
			t.Fatalf("config write %d: %v", i+1, err)
		}
		if resp != nil && resp.IsError() {
			t.Fatalf("config write %d: %v", i+1, resp.Error())
		}
		conn, err := b.connection(ctx, conf.StorageView)
		if err != nil || conn == nil {
			t.Fatalf("no connection after write %d: %v", i+1, err)
		}
		cfg := conn.config
		for what, v := range map[string]any{
			"the IMS client of the connection": conn.client,
			"the IMS client verify builds":     b.newIMSClient(cfg),
			"the I/O Management client":        ims.NewManagement(cfg.IOManagementURL, cfg.ClientID, b.imsOptions()), // as rotate and rollbackRotation build it
			"the options every client gets":    b.imsOptions(),
		} {
			w := &tlsWalk{seen: map[uintptr]bool{}}
			w.walk(reflect.ValueOf(v), what)
			for _, p := range w.problems {
				t.Errorf("after write %d: %s", i+1, p)
			}
			if w.transports == 0 && what != "the options every client gets" {
				t.Errorf("after write %d: %s reaches no http.Transport: the walk checked nothing", i+1, what)
			}
		}
	}
}

// tlsWalk looks through a value, unexported fields too, for http.Transport
// and tls.Config values, and notes each that would not verify.
type tlsWalk struct {
	seen       map[uintptr]bool
	transports int
	problems   []string
}

func (w *tlsWalk) walk(v reflect.Value, path string) {
	if !v.IsValid() {
		return
	}
	switch v.Type() {
	case reflect.TypeFor[http.Transport]():
		w.transports++
		for _, dialer := range []string{"DialTLS", "DialTLSContext"} {
			if !v.FieldByName(dialer).IsNil() {
				w.problems = append(w.problems, fmt.Sprintf("%s has its own %s, which bypasses TLSClientConfig", path, dialer))
			}
		}
		w.walk(v.FieldByName("TLSClientConfig"), path+".TLSClientConfig")
		return // the rest is connection state
	case reflect.TypeFor[tls.Config]():
		if v.FieldByName("InsecureSkipVerify").Bool() {
			w.problems = append(w.problems, path+" has InsecureSkipVerify")
		}
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() || w.seen[v.Pointer()] {
			return
		}
		w.seen[v.Pointer()] = true
		w.walk(v.Elem(), path)
	case reflect.Interface:
		if !v.IsNil() {
			w.walk(v.Elem(), path)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			w.walk(v.Field(i), path+"."+v.Type().Field(i).Name)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			w.walk(v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		for it := v.MapRange(); it.Next(); {
			w.walk(it.Value(), fmt.Sprintf("%s[%v]", path, it.Key()))
		}
	}
}
