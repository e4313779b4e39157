package adobeims

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

// assertFormatsWithoutSecrets formats v with every verb, with Sprint and
// Sprintln, and checks that no secret appears, as it is or hex-encoded.
// When marked, the %v and %#v texts must show redact.Marker: the secret's
// field is printed, with the marker in its place.
func assertFormatsWithoutSecrets(t *testing.T, v any, marked bool, secrets []string) {
	t.Helper()
	texts := map[string]string{"Sprint": fmt.Sprint(v), "Sprintln": fmt.Sprintln(v)}
	// The usual verbs, and those that would print a struct's strings in
	// another encoding or with a width.
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%+20v"} {
		texts[verb] = fmt.Sprintf(verb, v)
	}
	for what, text := range texts {
		for _, s := range secrets {
			for _, form := range []string{s, hex.EncodeToString([]byte(s)), strings.ToUpper(hex.EncodeToString([]byte(s)))} {
				if strings.Contains(text, form) {
					t.Errorf("%s of %T shows a secret:\n%s", what, v, text)
				}
			}
		}
	}
	if marked {
		for _, verb := range []string{"%v", "%#v"} {
			if !strings.Contains(texts[verb], redact.Marker) {
				t.Errorf("%s of %T does not show %s where the secret was:\n%s", verb, v, redact.Marker, texts[verb])
			}
		}
	}
}

// TestFormattingNeverShowsASecret formats every type of this package that
// holds the client secret or a token, and those of internal/ims and
// internal/tokencache the plugin holds them in, as values and as pointers,
// with every verb: none shows a secret. Holding one behind an unexported
// pointer is holding it: for a verb such as %s, fmt prints what the pointer
// points to field by field, without calling its methods, so the connection
// and the rotation result redact too. The backend holds its secrets two
// pointers away, which fmt prints as an address.
func TestFormattingNeverShowsASecret(t *testing.T) {
	const bearer = "eyJ.test-management-bearer.5c2e9a"
	e := newTestEnv(t)
	e.configure(map[string]any{keyOrgID: "1234ABCD@AdobeOrg", keyCredentialID: "cred-1", keyRotationPeriod: "720h"})
	conn, res := holdEveryKindOfToken(t, e)
	tok := res.Token
	persisted := persistedToken{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType, Scopes: tok.Scopes, MintedAt: tok.MintedAt,
		ExpiresAt: tok.ExpiresAt, ClientID: conn.config.ClientID, IMSURL: conn.config.IMSURL,
	}
	rot := rotation{b: e.b, s: e.storage, cfg: conn.config, bearer: bearer, log: e.b.logger("rotate"),
		mgmt: ims.NewManagement(conn.config.IOManagementURL, conn.config.ClientID, e.b.imsOptions())}
	creds := ims.Credentials{ClientID: conn.config.ClientID, ClientSecret: conn.config.ClientSecret}
	result := rotationResult{config: conn.config, oldUUID: "uuid-0", warnings: []string{"a warning"}}

	secrets := []string{testClientSecret, bearer}
	for _, issued := range e.emu.Tokens() {
		secrets = append(secrets, issued.AccessToken)
	}
	if len(secrets) < 4 {
		t.Fatalf("IMS issued %d tokens, want the shared one verify minted and the dedicated one", len(secrets)-2)
	}

	cfg := *conn.config
	for _, tc := range []struct {
		name   string
		values []any
		marked bool
	}{
		{"config", []any{cfg, &cfg}, true},
		{"persistedToken", []any{persisted, &persisted}, true},
		{"rotation", []any{rot, &rot}, true},
		{"rotationResult", []any{result, &result}, true},
		{"tokencache.Token", []any{*tok, tok}, true},
		{"tokencache.Result", []any{res, &res}, true},
		{"ims.Credentials", []any{creds, &creds}, true},
		{"ims.Client", []any{*conn.client, conn.client}, true},
		{"connection", []any{*conn, conn}, true},
		{"backend", []any{e.b}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.values {
				assertFormatsWithoutSecrets(t, v, tc.marked, secrets)
			}
		})
	}
}

// TestRedactedTypesStillEncodeTheirSecrets: the formatting methods change
// nothing of JSON, which storage uses: the secret and the token are encoded
// and decode to what was stored.
func TestRedactedTypesStillEncodeTheirSecrets(t *testing.T) {
	persist := false
	cfg := config{
		ClientID: testClientID, ClientSecret: testClientSecret, Scopes: []string{"openid"}, IMSURL: ims.DefaultURL,
		OrgID: "1234ABCD@AdobeOrg", CredentialID: "cred-1", IOManagementURL: ims.DefaultManagementURL,
		PersistTokens: &persist, MaxConcurrentIMSRequests: 8, ClientSecretUUID: "uuid-1", SecretStamp: "stamp",
		LastRotation: time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC), RotationPeriod: 720 * time.Hour,
	}
	tok := persistedToken{
		AccessToken: "eyJ.test-stored-token.0b3f", TokenType: "bearer", Scopes: []string{"openid"},
		MintedAt: time.Date(2025, 5, 1, 12, 0, 0, 0, time.UTC), ExpiresAt: time.Date(2025, 5, 2, 12, 0, 0, 0, time.UTC),
		ClientID: testClientID, IMSURL: ims.DefaultURL,
	}
	for _, tc := range []struct {
		name, secret, key string
		in, out           any
	}{
		{"config", testClientSecret, `"client_secret":`, &cfg, &config{}},
		{"persistedToken", tok.AccessToken, `"access_token":`, &tok, &persistedToken{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := json.Marshal(tc.in)
			if err != nil {
				t.Fatalf("encoding: %v", err)
			}
			if !strings.Contains(string(j), tc.key+fmt.Sprintf("%q", tc.secret)) {
				t.Fatalf("JSON lacks the real value under %s: %s", tc.key, j)
			}
			if err := json.Unmarshal(j, tc.out); err != nil {
				t.Fatalf("decoding: %v", err)
			}
			if !reflect.DeepEqual(tc.in, tc.out) {
				t.Fatalf("round trip changed the value: got %#v", tc.out)
			}
		})
	}
	s := newTestEnv(t).storage
	if err := putConfig(t.Context(), s, &cfg); err != nil {
		t.Fatal(err)
	}
	got, err := getConfig(t.Context(), s)
	if err != nil || got == nil || got.ClientSecret != testClientSecret || !reflect.DeepEqual(*got, cfg) {
		t.Fatalf("the stored config did not come back whole: %v", err)
	}
}

// The child process of TestPanicMessagesCarryNoSecret is this test binary,
// run with panicChildEnv naming the panic to die of, and panicTokensEnv the
// file it writes the issued tokens to first, for the parent to look for.
const (
	panicChildEnv  = "ADOBEIMS_TEST_PANIC_CHILD"
	panicTokensEnv = "ADOBEIMS_TEST_PANIC_TOKENS"
)

// panicCase is a value a goroutine holding the configured backend panics
// with in the child: a value that holds a secret, or an error whose text was
// made by formatting one.
type panicCase struct {
	name  string
	value func(b *backend, conn *connection, tok *tokencache.Token) any
	// shown is false where the secrets are behind pointers fmt prints as
	// addresses; elsewhere the message shows redact.Marker in their place.
	shown bool
}

func panicCases() []panicCase {
	return []panicCase{
		{"config value", func(_ *backend, c *connection, _ *tokencache.Token) any { return *c.config }, true},
		{"config pointer", func(_ *backend, c *connection, _ *tokencache.Token) any { return c.config }, true},
		{"error wrapping the config", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("storing the config: %w", fmt.Errorf("%v", *c.config))
		}, true},
		{"error wrapping %+v of the config", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("storing the config: %w", fmt.Errorf("%+v", c.config))
		}, true},
		{"error with %#v of the config", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("bad config %#v", c.config)
		}, true},
		{"error with the shared token", func(_ *backend, _ *connection, tok *tokencache.Token) any {
			return fmt.Errorf("caching %+v", tok)
		}, true},
		{"error with the ims client", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("minting with %+v", c.client)
		}, true},
		{"error with the connection", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("connection %+v", *c)
		}, true},
		{"error with %s of the connection", func(_ *backend, c *connection, _ *tokencache.Token) any {
			return fmt.Errorf("connection %s", c) // fmt prints what a pointer field points to for %s
		}, true},
		{"error with the backend", func(b *backend, _ *connection, _ *tokencache.Token) any {
			return fmt.Errorf("backend %+v", b)
		}, false},
	}
}

// TestPanicMessagesCarryNoSecret runs, for each panic value, a child process
// whose backend holds a config and tokens, and in which a goroutine panics
// with that value, with GOTRACEBACK=all. The child must crash, and nothing
// it writes (the panic message and every goroutine's stack) may hold the
// client secret or a token. Without the formatting methods, an error made
// with %v of a config carries the secret into the panic message.
func TestPanicMessagesCarryNoSecret(t *testing.T) {
	if name := os.Getenv(panicChildEnv); name != "" {
		panicChild(t, name, os.Getenv(panicTokensEnv))
		return
	}
	for _, pc := range panicCases() {
		name := pc.name
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			tokensFile := filepath.Join(t.TempDir(), "tokens")
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestPanicMessagesCarryNoSecret$", "-test.timeout=2m") //nolint:gosec // G204, G702: this test binary, run again
			cmd.Env = append(os.Environ(), panicChildEnv+"="+name, panicTokensEnv+"="+tokensFile, "GOTRACEBACK=all")
			out, err := cmd.CombinedOutput()

			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() == 0 {
				t.Fatalf("the child did not crash (%v):\n%s", err, out)
			}
			text := string(out)
			if !strings.Contains(text, "panic: ") || !strings.Contains(text, "goroutine ") {
				t.Fatalf("the child's output has no panic message and stacks:\n%s", text)
			}
			raw, err := os.ReadFile(tokensFile) //nolint:gosec // G304: a file in this test's own temporary directory
			if err != nil {
				t.Fatalf("reading the tokens the child held: %v\n%s", err, text)
			}
			tokens := strings.Fields(string(raw))
			if len(tokens) < 2 {
				t.Fatalf("the child held %d tokens, want the verify and dedicated ones at least", len(tokens))
			}
			leaked := 0
			for _, s := range append(tokens, testClientSecret) {
				if strings.Contains(text, s) {
					leaked++
				}
			}
			if leaked > 0 {
				t.Fatalf("the child's output holds %d of the %d secrets and tokens it held:\n%s", leaked, len(tokens)+1, text)
			}
			if pc.shown && !strings.Contains(text, redact.Marker) {
				t.Errorf("the panic message does not show %s where the secrets were, so the value was not printed:\n%s", redact.Marker, text)
			}
		})
	}
}

// panicChild is the child's side: it configures a backend, reads a shared
// and a dedicated token, saves every token IMS issued, and dies of the
// panic named in a goroutine that holds the backend.
func panicChild(t *testing.T, name, tokensFile string) {
	e := newTestEnv(t)
	e.configure(nil)
	conn, res := holdEveryKindOfToken(t, e)
	i := slices.IndexFunc(panicCases(), func(pc panicCase) bool { return pc.name == name })
	if i < 0 {
		t.Fatalf("no panic case %q", name)
	}
	value := panicCases()[i].value(e.b, conn, res.Token)
	var tokens []string
	for _, tok := range e.emu.Tokens() {
		tokens = append(tokens, tok.AccessToken)
	}
	if err := os.WriteFile(tokensFile, []byte(strings.Join(tokens, "\n")), 0o600); err != nil { //nolint:gosec // G703: the parent's temporary file, named by the parent
		t.Fatalf("saving the tokens for the parent: %v", err)
	}
	go func(b *backend, v any) {
		_ = b // held, so that its stack is among those printed
		panic(v)
	}(e.b, value)
	select {} // the goroutine's panic ends the process
}

// holdEveryKindOfToken has the configured backend read a dedicated token and
// hold a shared one, and returns its connection and the shared token.
func holdEveryKindOfToken(t *testing.T, e *testEnv) (*connection, tokencache.Result) {
	t.Helper()
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	e.creds("creds/d")
	conn, err := e.b.connection(t.Context(), e.storage)
	if err != nil || conn == nil {
		t.Fatalf("connection: %v", err)
	}
	res, err := e.b.cache.Get(t.Context(), conn.config.Scopes)
	if err != nil {
		t.Fatalf("shared token: %v", err)
	}
	return conn, res
}
