package ims

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

// formatTexts formats v with the usual verbs, with those that print a
// struct's strings in another encoding or with a width, and with Sprint and
// Sprintln, keyed by how.
func formatTexts(v any) map[string]string {
	texts := map[string]string{"Sprint": fmt.Sprint(v), "Sprintln": fmt.Sprintln(v)}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%+20v"} {
		texts[verb] = fmt.Sprintf(verb, v)
	}
	return texts
}

// TestFormattingNeverShowsASecret formats, as values and as pointers and
// with every verb, each type of this package that holds the client secret,
// an access token, a bearer token or a new secret's value: none shows one,
// as it is or hex-encoded. Where marked, %#v must show redact.Marker where
// the secret was, so the field is still there to see.
func TestFormattingNeverShowsASecret(t *testing.T) {
	secrets := []string{testSecret, testToken, testBearer, newSecretValue}

	creds := testCreds
	tok := Token{AccessToken: testToken, TokenType: "bearer", Scopes: []string{"openid"}, DebugID: "dbg-1"}
	created := CreatedSecret{Secret: Secret{UUID: "11ede8ab", ExpiresAt: "PERMANENT"}, ClientSecret: newSecretValue}
	decoded := secretJSON{UUID: "11ede8ab", ClientSecret: newSecretValue}
	client := NewClient("https://ims.example.com", testCreds, Options{})
	c := call{op: OpToken, attempts: 1, secrets: []string{testSecret, testToken}}
	c.body.WriteString(`{"access_token":"` + testToken + `"}`)
	tee := teeBody{ReadCloser: io.NopCloser(strings.NewReader(testToken)), c: &c}
	ierr := Error{
		Op: OpToken, StatusCode: 400, Code: "invalid_client", Description: "bad client",
		Err: errors.New("the server said " + testToken), Attempts: 1, redact: []string{testSecret, testToken},
	}

	for _, tc := range []struct {
		name   string
		values []any
		marked bool
	}{
		{"Credentials", []any{creds, &creds}, true},
		{"Token", []any{tok, &tok}, true},
		{"CreatedSecret", []any{created, &created}, true},
		{"secretJSON", []any{decoded, &decoded}, true},
		{"Client", []any{*client, client}, true},
		{"call", []any{c, &c}, true},
		{"teeBody", []any{tee, &tee}, true},
		{"Error", []any{ierr, &ierr}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.values {
				texts := formatTexts(v)
				for how, text := range texts {
					for _, s := range secrets {
						for _, form := range []string{s, hex.EncodeToString([]byte(s)), strings.ToUpper(hex.EncodeToString([]byte(s)))} {
							if strings.Contains(text, form) {
								t.Errorf("%s of %T shows a secret:\n%s", how, v, text)
							}
						}
					}
				}
				if tc.marked && !strings.Contains(texts["%#v"], redact.Marker) {
					t.Errorf("%%#v of %T does not show %s where the secret was:\n%s", v, redact.Marker, texts["%#v"])
				}
			}
		})
	}
}

// TestErrorFormatsAsItsText: an *Error still prints as its (scrubbed) text
// with %v, %s, %q and through %w, as errors do.
func TestErrorFormatsAsItsText(t *testing.T) {
	e := &Error{Op: OpToken, StatusCode: 400, Code: "invalid_client", Description: "bad " + testSecret, redact: []string{testSecret}}
	want := e.Error()
	if strings.Contains(want, testSecret) || !strings.Contains(want, "invalid_client") {
		t.Fatalf("Error() = %q", want)
	}
	for verb, got := range map[string]string{
		"%v": fmt.Sprintf("%v", e), "%+v": fmt.Sprintf("%+v", e), "%s": fmt.Sprintf("%s", e),
		"%q": fmt.Sprintf("%q", e), "%w": fmt.Errorf("%w", e).Error(), "%v of the value": fmt.Sprintf("%v", *e),
	} {
		w := want
		if verb == "%q" {
			w = fmt.Sprintf("%q", want)
		}
		if got != w {
			t.Errorf("%s = %q, want %q", verb, got, w)
		}
	}
}
