package ims

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

// maxExpiresIn rejects lifetimes no IMS token has (keep the message in
// parseExpiresIn in step): they live about 24 hours, and a value in
// milliseconds, the retired JWT exchange's unit, is far above.
const maxExpiresIn = 7 * 24 * time.Hour

// Token is an IMS access token.
type Token struct {
	AccessToken string
	TokenType   string
	ExpiresIn   time.Duration // from the response's expires_in, in seconds for v3
	Scopes      []string      // the scopes requested
	DebugID     string
}

// String, GoString and Format print the token with its value replaced by
// redact.Marker, whatever the verb.
func (t Token) String() string                { return fmt.Sprint(t.withoutSecrets()) }
func (t Token) GoString() string              { return fmt.Sprintf("%#v", t.withoutSecrets()) }
func (t Token) Format(f fmt.State, verb rune) { redact.Format(f, verb, t.withoutSecrets()) }

// redactedToken is a Token without its methods, to be formatted.
type redactedToken Token

func (t Token) withoutSecrets() redactedToken {
	v := redactedToken(t)
	v.AccessToken = redact.Secret(t.AccessToken)
	return v
}

// Token mints an access token for scopes with the client_credentials grant:
// POST {base}/ims/token/v3 with the credentials and one comma-joined scope
// parameter in the form body.
func (c *Client) Token(ctx context.Context, scopes []string) (*Token, error) {
	call, ctx, cancel := c.t.newCall(ctx, OpToken, idempotent, c.creds.ClientSecret)
	defer cancel()
	if len(scopes) == 0 {
		return nil, call.fail(nil, localErrorf("no scopes given: IMS requires at least one"))
	}
	// The wait for a slot counts against the call's bound, so a read that
	// queues still ends within it.
	call.gate, call.epoch = c.gate, c.epoch
	release, err := c.gate.Enter(ctx)
	if err != nil {
		return nil, c.notSent(call, err)
	}
	defer release()

	cfg := &clientcredentials.Config{
		ClientID:     c.creds.ClientID,
		ClientSecret: c.creds.ClientSecret,
		TokenURL:     c.tokenURL,
		// Query strings get logged, and Adobe does not document Basic auth.
		AuthStyle: oauth2.AuthStyleInParams,
		// IMS wants commas; oauth2 would join Scopes with spaces.
		EndpointParams: url.Values{"scope": {strings.Join(scopes, ",")}},
	}
	hc := &http.Client{Transport: call, CheckRedirect: noRedirects}
	tok, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, hc))
	if err != nil {
		return nil, tokenError(call, err)
	}

	// The token is refused below if anything else is wrong: keep it out of
	// whatever error says why.
	call.secrets = append(call.secrets, tok.AccessToken)

	if !isJSON(call.final.Header) {
		return nil, call.fail(call.final, localErrorf("the response is %s, not JSON", describeContent(call.final.Header.Get("Content-Type"), call.body.Len(), call.secrets)))
	}
	// oauth2's Expiry comes from the wall clock and reads a missing
	// expires_in as "never expires": take the number IMS sent instead.
	expiresIn, err := parseExpiresIn(tok.Extra("expires_in"))
	if err != nil {
		return nil, call.fail(call.final, err)
	}
	tokenType := tok.TokenType
	if tokenType == "" {
		tokenType = "bearer"
	}
	return &Token{
		AccessToken: tok.AccessToken,
		TokenType:   tokenType,
		ExpiresIn:   expiresIn,
		Scopes:      slices.Clone(scopes),
		DebugID:     quote(call.final.Header.Get("x-debug-id"), maxDebugIDLen, call.secrets),
	}, nil
}

// notSent describes a call the gate kept from IMS.
func (c *Client) notSent(call *call, err error) *Error {
	e := call.fail(nil, err)
	c.t.logger.Debug("adobe request not sent", "op", call.op, "error", e.Error())
	return e
}

// tokenError turns what oauth2 returned into an *Error. oauth2's own error
// text quotes the response body, so it is never kept.
func tokenError(call *call, err error) error {
	var ie *Error
	if errors.As(err, &ie) {
		return ie // no response: the call described it already
	}
	// A token in a response refused for another reason is still a token.
	call.secrets = append(call.secrets, echoedStrings(call.body.Bytes(), "access_token", "")...)
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		e := call.newError(re.Response)
		e.Code = quote(re.ErrorCode, maxCodeLen, call.secrets)
		e.Description = quote(re.ErrorDescription, maxDescriptionLen, call.secrets)
		if e.Code == "" && e.Description == "" {
			parseErrorBody(e, re.Response.Header, call.body.Bytes())
		}
		return call.finish(e)
	}
	if call.final == nil {
		return call.fail(nil, localErrorf("the token request could not be made: %v", stripURL(err)))
	}
	if call.bodyErr != nil {
		return call.fail(call.final, fmt.Errorf("reading the response: %w", stripURL(call.bodyErr)))
	}
	return call.fail(call.final, diagnoseTokenBody(call.final.Header.Get("Content-Type"), call.body.Bytes(), call.secrets))
}

// diagnoseTokenBody says why a 2xx body oauth2 refused is not a token.
func diagnoseTokenBody(contentType string, body []byte, secrets []string) error {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil || m == nil {
		return localErrorf("the response is %s, not a JSON token response", describeContent(contentType, len(body), secrets))
	}
	if s, _ := m["access_token"].(string); s == "" {
		return localErrorf("the response has no access_token")
	}
	if _, err := parseExpiresIn(m["expires_in"]); err != nil {
		return err
	}
	return localErrorf("the response is not a token response this client understands")
}

// parseExpiresIn checks expires_in as decoded from JSON: a whole, positive
// number of seconds no larger than maxExpiresIn.
func parseExpiresIn(v any) (time.Duration, error) {
	switch n := v.(type) {
	case nil:
		return 0, localErrorf("the response has no expires_in, so the token's lifetime is unknown")
	case float64:
		switch {
		case n != math.Trunc(n):
			return 0, localErrorf("expires_in %v is not a whole number of seconds", n)
		case n <= 0:
			return 0, localErrorf("expires_in %v is not a positive number of seconds", n)
		case n > maxExpiresIn.Seconds():
			return 0, localErrorf("expires_in %v seconds is absurd: more than 7 days, where IMS tokens live about 24 hours", n)
		}
		return time.Duration(n) * time.Second, nil
	case string:
		return 0, localErrorf("expires_in is a JSON string, not a number of seconds")
	}
	return 0, localErrorf("expires_in is a JSON %s, not a number of seconds", jsonKind(v))
}

func jsonKind(v any) string {
	switch v.(type) {
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// isJSON is false for the form and text bodies oauth2 also accepts; IMS
// answers JSON, and only JSON says what type expires_in is.
func isJSON(h http.Header) bool {
	media, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	return media != "application/x-www-form-urlencoded" && media != "text/plain"
}

// Invalidate revokes accessToken at IMS (POST {base}/ims/invalidate_token/v2).
// A token IMS reports as already invalid counts as revoked, so revocation is
// idempotent.
func (c *Client) Invalidate(ctx context.Context, accessToken string) error {
	call, ctx, cancel := c.t.newCall(ctx, OpInvalidate, idempotent, c.creds.ClientSecret, accessToken)
	defer cancel()
	if accessToken == "" {
		return call.fail(nil, localErrorf("no token given"))
	}
	// IMS throttles the credential, not the endpoint, so a revocation waits
	// for a throttle like a mint does. It takes no slot: the cap is on token
	// requests, so that a backlog of revocations (which Vault paces and
	// retries on its own) never keeps reads from getting tokens.
	call.gate, call.epoch = c.gate, c.epoch
	if err := c.gate.AwaitThrottle(ctx); err != nil {
		return c.notSent(call, err)
	}

	form := url.Values{
		"token_type":    {"access_token"},
		"token":         {accessToken},
		"client_id":     {c.creds.ClientID},
		"client_secret": {c.creds.ClientSecret},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.invalidateURL, strings.NewReader(form.Encode()))
	if err != nil {
		return call.fail(nil, localErrorf("preparing the request: %v", stripURL(err)))
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-IMS-ClientId", c.creds.ClientID)

	resp, body, err := call.do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	e := call.responseError(resp, body)
	if resp.StatusCode == http.StatusBadRequest && tokenAlreadyInvalid(e.Code) {
		c.t.logger.Debug("token was already invalid", "op", OpInvalidate, "code", e.Code, "x_debug_id", e.DebugID)
		return nil
	}
	return e
}

// tokenAlreadyInvalid recognises IMS saying the token itself is not (or no
// longer) valid, as opposed to refusing the client.
func tokenAlreadyInvalid(code string) bool {
	switch strings.ToLower(code) {
	case "invalid_token", "unknown_token", "expired_token", "token_expired":
		return true
	}
	return false
}
