// Package ims talks to Adobe IMS (minting and invalidating access tokens for
// OAuth Server-to-Server credentials) and to the Adobe I/O Management API
// (rotating a credential's client secret). It knows nothing about Vault.
package ims

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"github.com/hashicorp/go-hclog"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

const (
	// DefaultURL is Adobe's production IMS.
	DefaultURL = "https://ims-na1.adobelogin.com"
	// DefaultManagementURL is the Adobe I/O Management API.
	DefaultManagementURL = "https://api.adobe.io"
)

// Operation names, as found in Attempt.Op and Error.Op.
const (
	OpToken        = "token"
	OpInvalidate   = "invalidate"
	OpListSecrets  = "list secrets"
	OpCreateSecret = "create secret"
	OpDeleteSecret = "delete secret"
)

// ManagementScopes returns the scopes a token needs for the I/O Management
// API's client-secret calls, as Adobe documents them.
func ManagementScopes() []string {
	return []string{
		"AdobeID", "openid", "read_organizations",
		"additional_info.projectedProductContext", "additional_info.roles",
		"adobeio_api", "read_client_secret", "manage_client_secrets",
	}
}

const (
	defaultRetryMax       = 4
	defaultRetryWaitMin   = 200 * time.Millisecond
	defaultRetryWaitMax   = 5 * time.Second
	defaultMaxElapsed     = 30 * time.Second // well inside Vault's 90s request timeout
	defaultAttemptTimeout = 10 * time.Second
)

// Credentials are an OAuth Server-to-Server credential from the Adobe
// Developer Console.
type Credentials struct{ ClientID, ClientSecret string }

// String, GoString and Format print the credentials with the client secret
// replaced by redact.Marker, whatever the verb: a log line, an error or a
// panic message that formats them cannot carry the secret.
func (c Credentials) String() string                { return fmt.Sprint(c.withoutSecrets()) }
func (c Credentials) GoString() string              { return fmt.Sprintf("%#v", c.withoutSecrets()) }
func (c Credentials) Format(f fmt.State, verb rune) { redact.Format(f, verb, c.withoutSecrets()) }

// redactedCredentials is Credentials without its methods, to be formatted.
type redactedCredentials Credentials

func (c Credentials) withoutSecrets() redactedCredentials {
	return redactedCredentials{ClientID: c.ClientID, ClientSecret: redact.Secret(c.ClientSecret)}
}

// Options tune the HTTP behaviour shared by Client and Management. The zero
// value is fit for production.
type Options struct {
	HTTPClient     *http.Client  // base client; nil means cleanhttp.DefaultPooledClient() (proxies from env, TLS verified)
	Logger         hclog.Logger  // nil means hclog.NewNullLogger()
	RetryMax       int           // retries after the first attempt; 0 means 4; negative means no retries
	RetryWaitMin   time.Duration // default 200ms
	RetryWaitMax   time.Duration // default 5s
	MaxElapsed     time.Duration // bound on one call including all retries and waits; default 30s
	AttemptTimeout time.Duration // per HTTP attempt; default 10s
	OnAttempt      func(Attempt) // optional observer for metrics, called after every HTTP attempt

	// Gate, if set, caps the token requests in flight and remembers IMS
	// throttling this credential; share one among every Client made for the
	// credential. nil means no cap and no memory. Management ignores it: the
	// I/O Management API is another service, with limits of its own.
	Gate *imsgate.Gate
}

// Attempt describes one HTTP attempt, for logs and metrics.
type Attempt struct {
	Op       string        // "token", "invalidate", "list secrets", "create secret", "delete secret"
	Number   int           // 1-based attempt number
	Status   int           // HTTP status, 0 when no response
	Duration time.Duration // time to response headers, or to the failure
	DebugID  string        // x-debug-id response header
	Err      error         // transport error, if any (scrubbed)
	Retrying bool          // another attempt follows
}

// Client mints and invalidates IMS access tokens for one credential. It is
// immutable after NewClient and safe for concurrent use.
type Client struct {
	tokenURL      string
	invalidateURL string
	creds         Credentials
	t             *transport
	gate          *imsgate.Gate
	epoch         uint64 // the gate's, when the client was made for its credential
}

// NewClient returns a client for the IMS at baseURL (DefaultURL when empty),
// which should have been checked with ParseBaseURL.
func NewClient(baseURL string, creds Credentials, opts Options) *Client {
	base := trimBase(baseURL, DefaultURL)
	return &Client{
		tokenURL:      base + "/ims/token/v3",
		invalidateURL: base + "/ims/invalidate_token/v2",
		creds:         creds,
		t:             newTransport(opts),
		gate:          opts.Gate,
		epoch:         opts.Gate.Epoch(),
	}
}

// ClientID returns the client ID of the credential the client uses.
func (c *Client) ClientID() string { return c.creds.ClientID }

// String, GoString and Format print the client's endpoints and credentials,
// without the client secret: fmt never calls the methods of an unexported
// field, so Credentials cannot redact itself inside a Client.
func (c Client) String() string                { return fmt.Sprint(c.withoutSecrets()) }
func (c Client) GoString() string              { return fmt.Sprintf("%#v", c.withoutSecrets()) }
func (c Client) Format(f fmt.State, verb rune) { redact.Format(f, verb, c.withoutSecrets()) }

// redactedClient is what formatting a Client shows.
type redactedClient struct {
	TokenURL, InvalidateURL string
	Credentials             redactedCredentials
}

func (c Client) withoutSecrets() redactedClient {
	return redactedClient{TokenURL: c.tokenURL, InvalidateURL: c.invalidateURL, Credentials: c.creds.withoutSecrets()}
}

func trimBase(baseURL, def string) string {
	if baseURL = strings.TrimRight(strings.TrimSpace(baseURL), "/"); baseURL == "" {
		return def
	}
	return baseURL
}

// transport is the retrying HTTP machinery shared by Client and Management.
// It is immutable; each call keeps its own state in a call value.
type transport struct {
	http       *http.Client
	logger     hclog.Logger
	retryMax   int
	waitMin    time.Duration
	waitMax    time.Duration
	maxElapsed time.Duration
	onAttempt  func(Attempt)
}

func newTransport(o Options) *transport {
	base := o.HTTPClient
	if base == nil {
		base = cleanhttp.DefaultPooledClient()
	}
	// A copy, so that the caller's client keeps its own settings.
	hc := *base
	hc.Timeout = orDefault(o.AttemptTimeout, defaultAttemptTimeout)
	hc.CheckRedirect = noRedirects

	t := &transport{
		http:       &hc,
		logger:     o.Logger,
		retryMax:   o.RetryMax,
		waitMin:    orDefault(o.RetryWaitMin, defaultRetryWaitMin),
		waitMax:    orDefault(o.RetryWaitMax, defaultRetryWaitMax),
		maxElapsed: orDefault(o.MaxElapsed, defaultMaxElapsed),
		onAttempt:  o.OnAttempt,
	}
	switch {
	case t.retryMax == 0:
		t.retryMax = defaultRetryMax
	case t.retryMax < 0:
		t.retryMax = 0
	}
	t.waitMax = max(t.waitMax, t.waitMin)
	if t.logger == nil {
		t.logger = hclog.NewNullLogger()
	}
	return t
}

func orDefault(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// noRedirects returns a redirect as the response: following one would send
// the client secret or a bearer token wherever the Location points.
func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
