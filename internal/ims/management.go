package ims

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

// Secret is a client secret of a credential, as the I/O Management API
// lists it: never with its value.
type Secret struct {
	UUID       string
	CreatedAt  time.Time
	ExpiresAt  string    // "PERMANENT" or what Adobe sent
	LastUsedAt time.Time // latest use over all grant types; zero if never used
}

// CreatedSecret is a newly created secret: the only time Adobe shows its value.
type CreatedSecret struct {
	Secret
	ClientSecret string
}

// String, GoString and Format print the new secret's uuid and times, with
// its value replaced by redact.Marker, whatever the verb.
func (s CreatedSecret) String() string                { return fmt.Sprint(s.withoutSecrets()) }
func (s CreatedSecret) GoString() string              { return fmt.Sprintf("%#v", s.withoutSecrets()) }
func (s CreatedSecret) Format(f fmt.State, verb rune) { redact.Format(f, verb, s.withoutSecrets()) }

// redactedCreatedSecret is a CreatedSecret without its methods, to be
// formatted. Secret, embedded, has none to promote.
type redactedCreatedSecret CreatedSecret

func (s CreatedSecret) withoutSecrets() redactedCreatedSecret {
	v := redactedCreatedSecret(s)
	v.ClientSecret = redact.Secret(s.ClientSecret)
	return v
}

// Management calls the Adobe I/O Management API's client-secret endpoints,
// used to rotate a credential's secret. It is immutable and safe for
// concurrent use.
type Management struct {
	baseURL  string
	clientID string
	t        *transport
}

// NewManagement returns a client for the I/O Management API at baseURL
// (DefaultManagementURL when empty). clientID is sent as x-api-key.
func NewManagement(baseURL, clientID string, opts Options) *Management {
	return &Management{baseURL: trimBase(baseURL, DefaultManagementURL), clientID: clientID, t: newTransport(opts)}
}

// ListSecrets lists the client secrets of the credential. bearer must be
// a token minted with ManagementScopes.
func (m *Management) ListSecrets(ctx context.Context, bearer, orgID, credentialID string) ([]Secret, error) {
	call, resp, body, err := m.request(ctx, OpListSecrets, idempotent, http.MethodGet, bearer, orgID, credentialID, "")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, call.responseError(resp, body)
	}
	var list struct {
		Secrets *[]secretJSON `json:"client_secrets"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, call.fail(resp, localErrorf("the response is not a list of secrets: %s", describeJSONError(err, call.secrets)))
	}
	// A list that is missing must not read as "no secrets": rotation decides
	// what to create and delete from it.
	if list.Secrets == nil {
		return nil, call.fail(resp, localErrorf("the response has no client_secrets list"))
	}
	out := make([]Secret, 0, len(*list.Secrets))
	for _, s := range *list.Secrets {
		out = append(out, s.secret())
	}
	return out, nil
}

// CreateSecret adds a client secret to the credential. At most two may
// exist. The request is not idempotent, so it is retried only when the
// server cannot have acted on it; after a 5xx or a timeout, list the
// secrets to learn whether one was created.
func (m *Management) CreateSecret(ctx context.Context, bearer, orgID, credentialID string) (*CreatedSecret, error) {
	call, resp, body, err := m.request(ctx, OpCreateSecret, notProcessed, http.MethodPost, bearer, orgID, credentialID, "")
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return nil, call.responseError(resp, body)
	}
	var s secretJSON
	if err := json.Unmarshal(body, &s); err != nil {
		return nil, call.fail(resp, localErrorf("the response is not a new secret: %s", describeJSONError(err, call.secrets)))
	}
	if s.UUID == "" || s.ClientSecret == "" {
		return nil, call.fail(resp, localErrorf("the response lacks the new secret's uuid or value; list the secrets to see whether one was created"))
	}
	return &CreatedSecret{Secret: s.secret(), ClientSecret: s.ClientSecret}, nil
}

// DeleteSecret removes the secret uuid from the credential. A secret that is
// already gone counts as deleted. Tokens minted with it stay valid.
func (m *Management) DeleteSecret(ctx context.Context, bearer, orgID, credentialID, uuid string) error {
	call, resp, body, err := m.request(ctx, OpDeleteSecret, idempotent, http.MethodDelete, bearer, orgID, credentialID, uuid)
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		m.t.logger.Debug("secret was already deleted", "op", OpDeleteSecret, "x_debug_id", quote(resp.Header.Get("x-debug-id"), maxDebugIDLen, call.secrets))
		return nil
	case resp.StatusCode < 200 || resp.StatusCode >= 300:
		return call.responseError(resp, body)
	}
	return nil
}

// request sends one call to the secrets endpoint, or to the secret uuid
// under it when uuid is not empty.
func (m *Management) request(ctx context.Context, op string, retry retryPolicy, method, bearer, orgID, credentialID, uuid string) (*call, *http.Response, []byte, error) {
	call, ctx, cancel := m.t.newCall(ctx, op, retry, bearer)
	defer cancel()
	switch {
	case bearer == "":
		return nil, nil, nil, call.fail(nil, localErrorf("no bearer token given"))
	case orgID == "" || credentialID == "":
		return nil, nil, nil, call.fail(nil, localErrorf("org_id and credential_id are both required"))
	case method == http.MethodDelete && uuid == "":
		return nil, nil, nil, call.fail(nil, localErrorf("no secret uuid given"))
	}

	u := m.baseURL + "/console/organizations/" + url.PathEscape(orgID) +
		"/credentials/" + url.PathEscape(credentialID) + "/secrets"
	if uuid != "" {
		u += "/" + url.PathEscape(uuid)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, nil, nil, call.fail(nil, localErrorf("preparing the request: %v", stripURL(err)))
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	req.Header.Set("x-api-key", m.clientID)
	req.Header.Set("Accept", "application/json")

	resp, body, err := call.do(req)
	if err != nil {
		return nil, nil, nil, err
	}
	// A secret's value in the response must not reach an error about it,
	// whether or not decoding got that far.
	call.secrets = append(call.secrets, echoedStrings(body, "client_secret", "client_secrets")...)
	return call, resp, body, nil
}

type secretJSON struct {
	UUID         string   `json:"uuid"`
	ClientSecret string   `json:"client_secret"`
	CreatedAt    msTime   `json:"created_at"`
	ExpiresAt    jsonText `json:"expires_at"`
	Usages       []struct {
		LastUsedAt msTime `json:"last_used_at"`
	} `json:"secret_usages"`
}

// String, GoString and Format print the decoded secret with its value
// replaced by redact.Marker, whatever the verb.
func (s secretJSON) String() string                { return fmt.Sprint(s.withoutSecrets()) }
func (s secretJSON) GoString() string              { return fmt.Sprintf("%#v", s.withoutSecrets()) }
func (s secretJSON) Format(f fmt.State, verb rune) { redact.Format(f, verb, s.withoutSecrets()) }

// redactedSecretJSON is a secretJSON without its methods, to be formatted.
type redactedSecretJSON secretJSON

func (s secretJSON) withoutSecrets() redactedSecretJSON {
	v := redactedSecretJSON(s)
	v.ClientSecret = redact.Secret(s.ClientSecret)
	return v
}

func (s secretJSON) secret() Secret {
	out := Secret{UUID: s.UUID, CreatedAt: time.Time(s.CreatedAt), ExpiresAt: string(s.ExpiresAt)}
	for _, u := range s.Usages {
		if t := time.Time(u.LastUsedAt); t.After(out.LastUsedAt) {
			out.LastUsedAt = t
		}
	}
	return out
}

// msTime is a timestamp in milliseconds since the epoch, which Adobe sends
// as a string ("1683005777000"); a JSON number is accepted too.
type msTime time.Time

func (t *msTime) UnmarshalJSON(b []byte) error {
	s := strings.Trim(string(b), `"`)
	if s == "" || s == "null" {
		return nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return &timestampError{raw: s}
	}
	*t = msTime(time.UnixMilli(ms).UTC())
	return nil
}

// jsonText keeps a string or number as the text Adobe sent.
type jsonText string

func (j *jsonText) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*j = jsonText(s)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return localErrorf("expected a string or a number")
	}
	*j = jsonText(n)
	return nil
}

// timestampError is a timestamp msTime cannot read. It holds the raw
// value for describeJSONError to quote, redacted: msTime does not know the
// call's secrets.
type timestampError struct{ raw string }

func (t *timestampError) Error() string { return "a timestamp is not in milliseconds since the epoch" }

// describeJSONError says what is wrong with a body without quoting it:
// the body of a created secret holds the secret. What it does quote of the
// body is redacted of secrets.
func describeJSONError(err error, secrets []string) string {
	var (
		syntax *json.SyntaxError
		typ    *json.UnmarshalTypeError
		ts     *timestampError
		local  *localError
	)
	switch {
	case errors.As(err, &syntax):
		return "malformed JSON"
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type (%s)", quote(typ.Field, maxFieldLen, secrets), quote(typ.Value, maxFieldLen, secrets))
	case errors.As(err, &ts):
		return fmt.Sprintf("timestamp %q is not in milliseconds since the epoch", quote(ts.raw, maxTimestampLen, secrets))
	case errors.As(err, &local):
		return local.Error()
	}
	return "unreadable JSON"
}
