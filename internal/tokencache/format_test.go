package tokencache

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

const formatTestToken = "eyJ.test-format-token.93ac1e"

// secretKeepingError stands in for an IMS error, which keeps the secrets of
// its call to scrub its text of them.
type secretKeepingError struct{ secrets []string }

func (e *secretKeepingError) Error() string { return "IMS refused" }

// TestFormattingNeverShowsASecret formats a Token, a Result from the cache
// and a cache entry whose last error keeps a secret, as values and as
// pointers and with every verb: none shows the token or the secret, as it is
// or hex-encoded, and each shows redact.Marker where the token was. (The
// Cache holds its entries behind atomic pointers, which fmt prints as
// addresses; reading it field by field would race with its goroutines.)
func TestFormattingNeverShowsASecret(t *testing.T) {
	const secret = "p8e-test-format-client-secret"
	clock := newFakeClock()
	tok := Token{AccessToken: formatTestToken, TokenType: "bearer", Scopes: []string{"openid"}, MintedAt: clock.Now(), ExpiresAt: clock.Now().Add(24 * time.Hour)}
	c := New(func(context.Context, []string) (*Token, error) { t := tok; return &t, nil }, Options{Now: clock.Now})
	t.Cleanup(c.Close)
	res, err := c.Get(t.Context(), []string{"openid"})
	if err != nil {
		t.Fatal(err)
	}
	e := &entry{key: "openid"}
	e.token.Store(&tok)
	e.lastErr = &secretKeepingError{secrets: []string{secret}}

	for _, tc := range []struct {
		name   string
		values []any
	}{
		{"Token", []any{tok, &tok}},
		{"Result", []any{res, &res}},
		{"entry", []any{e}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, v := range tc.values {
				texts := map[string]string{"Sprint": fmt.Sprint(v), "Sprintln": fmt.Sprintln(v)}
				for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%+20v"} {
					texts[verb] = fmt.Sprintf(verb, v)
				}
				for how, text := range texts {
					for _, s := range []string{formatTestToken, secret} {
						for _, form := range []string{s, hex.EncodeToString([]byte(s)), strings.ToUpper(hex.EncodeToString([]byte(s)))} {
							if strings.Contains(text, form) {
								t.Errorf("%s of %T shows a secret:\n%s", how, v, text)
							}
						}
					}
				}
				if !strings.Contains(texts["%v"], redact.Marker) {
					t.Errorf("%%v of %T does not show %s where the token was:\n%s", v, redact.Marker, texts["%v"])
				}
			}
		})
	}
}
