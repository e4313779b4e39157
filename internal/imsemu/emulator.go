// Package imsemu is a TEST DOUBLE of Adobe IMS and of the client-secrets part of the
// Adobe I/O Management API. Our machines cannot reach Adobe, so this emulator stands in
// for it in unit tests, end-to-end tests and `make demo`.
//
// It also serves an Adobe API stand-in, itself a TEST DOUBLE: POST /v3/images/generate
// (APIPath, Firefly Services, normally at https://firefly-api.adobe.io) answers 200 with
// a plausible but fake generate response only when called the way adobe-ims.md says every
// Adobe API call is made: a bearer token this emulator issued and still considers valid,
// carrying the firefly_api scope, and x-api-key set to the token's client ID. It generates
// nothing; it exists so that tests and the demo can show a token from Vault working.
//
// It is written from shared/docs/adobe-ims.md and from nothing else. Where that page
// documents a behaviour (status codes, error bodies, the x-debug-id header, expires_in in
// seconds, one comma-separated scope parameter, invalidate answering 200 with an empty
// body, at most two client secrets, ...), the emulator reproduces it. Where the page is
// silent, the emulator does the least it can and the code says "not documented by Adobe".
// Where the page leaves a choice open (no published rate limit, 429 with or without
// Retry-After, 400 or 401 for a wrong secret), the choice is a knob for tests: see
// SetRateLimit and SetWrongSecretStatus.
//
// The plugin never knows about this package: it only ever sees an IMS URL and an I/O
// Management URL, which tests point at an Emulator (and a test or the demo calls the API
// stand-in with a token read from Vault). Never point a production Vault at it.
package imsemu

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Defaults applied by New to the zero fields of a Config.
const (
	// DefaultExpiresIn is the lifetime adobe-ims.md shows in its example response (86399 s).
	DefaultExpiresIn    = 86399 * time.Second
	DefaultOrgID        = "emu-org@AdobeOrg"
	DefaultCredentialID = "emu-credential" //nolint:gosec // G101: the emulator's credential identifier, not a secret
)

// Endpoint names, as used by Fault.Endpoint.
const (
	// EndpointAll matches every IMS and I/O Management endpoint, but not EndpointAPI: the
	// API stand-in plays another host (firefly-api.adobe.io), so that one fault can break
	// IMS while tokens already issued keep working against the API.
	EndpointAll        = ""
	EndpointToken      = "token"      // POST /ims/token/v3
	EndpointInvalidate = "invalidate" // POST /ims/invalidate_token/v2
	EndpointValidate   = "validate"   // POST /ims/validate_token/v1
	EndpointManagement = "management" // /console/organizations/{orgId}/credentials/{credentialId}/secrets[/{uuid}]
	EndpointAPI        = "api"        // POST /v3/images/generate, the Adobe API stand-in (APIPath)
)

const (
	pathToken        = "/ims/token/v3" //nolint:gosec // G101: a URL path, not a credential
	pathInvalidate   = "/ims/invalidate_token/v2"
	pathValidate     = "/ims/validate_token/v1"
	prefixManagement = "/console/organizations/"

	contentTypeJSON = "application/json;charset=utf-8"
	maxBody         = 1 << 20
)

// managementScopes are the scopes adobe-ims.md says a token needs for the I/O Management API.
var managementScopes = []string{
	"AdobeID", "openid", "read_organizations",
	"additional_info.projectedProductContext", "additional_info.roles",
	"adobeio_api", "read_client_secret", "manage_client_secrets",
}

// ManagementScopes returns the scopes a token must carry to call the I/O Management API.
func ManagementScopes() []string { return slices.Clone(managementScopes) }

// Config describes the one OAuth Server-to-Server credential the emulator knows.
type Config struct {
	ClientID string
	// ClientSecret is the credential's initial secret; it gets a uuid like any other.
	ClientSecret string
	// Scopes granted to the credential; a token request asking for any other scope is
	// refused with 400 invalid_scope.
	Scopes []string
	// ExpiresIn is the token lifetime reported in expires_in (whole seconds);
	// default DefaultExpiresIn.
	ExpiresIn time.Duration
	// OrgID and CredentialID appear in the I/O Management API paths;
	// defaults DefaultOrgID and DefaultCredentialID.
	OrgID, CredentialID string
	// Now is the clock for issuing, expiring and timestamping; default time.Now.
	Now func() time.Time
}

// Emulator is an http.Handler serving the IMS and I/O Management API surface, plus
// knobs and observations for tests. All state sits behind one mutex, so it is safe for
// concurrent use.
type Emulator struct {
	clientID     string
	orgID        string
	credentialID string
	scopes       []string // as configured, for the control API
	granted      map[string]bool
	now          func() time.Time

	// sleep waits out the latency in real time; tests replace it to hold requests in
	// flight without sleeping.
	sleep func(ctx context.Context, d time.Duration) bool

	mu                sync.Mutex
	expiresIn         time.Duration
	latency           time.Duration
	wrongSecretStatus int
	rateLimit         RateLimit
	admitted          map[string][]time.Time // per client_id, the admissions within the window, oldest first
	inFlight          int                    // token requests being served now
	fault             *Fault
	stats             Stats
	tokens            map[string]*tokenRecord
	issued            []*tokenRecord // in issue order
	secrets           []*clientSecret
}

// Stats counts what the emulator has seen since it started or since ResetStats.
type Stats struct {
	TokenRequests int `json:"token_requests"`
	TokensIssued  int `json:"tokens_issued"`
	// TokenErrors counts token requests refused by normal handling (the 4xx answers)
	// other than the rate limit's 429s, which TokenThrottled counts; injected faults are
	// counted in FaultsServed instead.
	TokenErrors    int `json:"token_errors"`
	TokenThrottled int `json:"token_throttled"`
	// TokenInFlight is how many token requests the emulator is serving right now, from
	// the moment one arrives until it is answered or abandoned (latency wait and faults
	// included): a gauge, which ResetStats leaves alone. TokenInFlightPeak is the most
	// there have been at once since the start, or since ResetStats (which sets it to
	// TokenInFlight).
	TokenInFlight      int `json:"token_in_flight"`
	TokenInFlightPeak  int `json:"token_in_flight_peak"`
	InvalidateRequests int `json:"invalidate_requests"`
	// Invalidated counts live tokens that an invalidate request ended.
	Invalidated        int `json:"invalidated"`
	ValidateRequests   int `json:"validate_requests"`
	ManagementRequests int `json:"management_requests"`
	// APIRequests counts requests to the Adobe API stand-in (APIPath), faulted ones
	// included; APIAccepted those it answered 200, APIRejections those it refused (the
	// 4xx answers). Injected faults are counted in FaultsServed instead.
	APIRequests   int `json:"api_requests"`
	APIAccepted   int `json:"api_accepted"`
	APIRejections int `json:"api_rejections"`
	// CredentialsInQuery counts IMS requests that put client_id or client_secret in the
	// query string, which Adobe accepts but advises against because query strings get logged.
	CredentialsInQuery int `json:"credentials_in_query"`
	FaultsServed       int `json:"faults_served"`
}

// IssuedToken is one access token the emulator has issued.
type IssuedToken struct {
	AccessToken string    `json:"access_token"`
	Scopes      []string  `json:"scopes"`
	IssuedAt    time.Time `json:"issued_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Invalidated bool      `json:"invalidated"`
	// SecretUUID is the uuid of the client secret the token was minted with; empty for
	// tokens handed out by an "expires_in" fault, which checks no credentials.
	SecretUUID string `json:"secret_uuid"`
	// APICalls counts the calls the Adobe API stand-in accepted with this token, and
	// LastAPICallAt (Config clock) is when it last accepted one.
	APICalls      int       `json:"api_calls"`
	LastAPICallAt time.Time `json:"last_api_call_at,omitzero"`
}

// SecretInfo describes one of the credential's client secrets, never its value.
type SecretInfo struct {
	UUID       string    `json:"uuid"`
	CreatedAt  time.Time `json:"created_at"`
	LastUsedAt time.Time `json:"last_used_at,omitzero"`
}

type tokenRecord struct {
	IssuedToken
	clientID string
	claims   tokenClaims
}

type clientSecret struct {
	uuid       string
	value      string
	createdAt  time.Time
	lastUsedAt time.Time
}

// New returns an emulator for the credential cfg describes.
func New(cfg Config) *Emulator {
	e := &Emulator{
		clientID:     cfg.ClientID,
		orgID:        orDefault(cfg.OrgID, DefaultOrgID),
		credentialID: orDefault(cfg.CredentialID, DefaultCredentialID),
		scopes:       slices.Clone(cfg.Scopes),
		granted:      make(map[string]bool, len(cfg.Scopes)),
		now:          cfg.Now,
		expiresIn:    cfg.ExpiresIn,
		tokens:       make(map[string]*tokenRecord),
		sleep:        sleep,

		wrongSecretStatus: http.StatusBadRequest,
		admitted:          make(map[string][]time.Time),
	}
	if e.now == nil {
		e.now = time.Now
	}
	if e.expiresIn <= 0 {
		e.expiresIn = DefaultExpiresIn
	}
	for _, s := range cfg.Scopes {
		e.granted[s] = true
	}
	if cfg.ClientSecret != "" {
		e.secrets = append(e.secrets, &clientSecret{uuid: newUUID(), value: cfg.ClientSecret, createdAt: e.now()})
	}
	return e
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// ServeHTTP answers the IMS and I/O Management API endpoints and the Adobe API stand-in
// (APIPath). Every response carries a fresh x-debug-id header, as IMS's do (what the API
// gateway sends instead is not documented by Adobe; the stand-in sends it too). Latency, then a matching fault, are applied
// before normal handling.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Debug-Id", newDebugID())
	ep := endpointOf(r.URL.Path)
	if ep == "" {
		// Unknown paths: what Adobe answers is not documented; a bare 404 is enough.
		http.NotFound(w, r)
		return
	}
	e.count(ep, r)
	if ep == EndpointToken {
		e.enterToken()
		defer e.exitToken()
	}
	// net/http notices a client that gave up only once the request body has been read,
	// so read it before any latency or hang.
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		if ep == EndpointAPI {
			// Not documented by Adobe: the gateway's answer to an oversized body.
			writeGatewayError(w, http.StatusBadRequest, APIErrorValidation, "unreadable request body")
		} else {
			refuse(http.StatusBadRequest, "invalid_request", "unreadable request body").write(w)
		}
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if !e.wait(r.Context()) {
		return // the client gave up while we were slow
	}
	if f := e.takeFault(ep); f != nil {
		e.serveFault(w, r, ep, f)
		return
	}
	switch ep {
	case EndpointToken:
		e.handleToken(w, r)
	case EndpointInvalidate:
		e.handleInvalidate(w, r)
	case EndpointValidate:
		e.handleValidate(w, r)
	case EndpointManagement:
		e.handleManagement(w, r)
	case EndpointAPI:
		e.handleAPI(w, r)
	}
}

func endpointOf(path string) string {
	switch {
	case path == pathToken:
		return EndpointToken
	case path == pathInvalidate:
		return EndpointInvalidate
	case path == pathValidate:
		return EndpointValidate
	case strings.HasPrefix(path, prefixManagement):
		return EndpointManagement
	case path == APIPath:
		return EndpointAPI
	}
	return ""
}

func (e *Emulator) count(ep string, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch ep {
	case EndpointToken:
		e.stats.TokenRequests++
	case EndpointInvalidate:
		e.stats.InvalidateRequests++
	case EndpointValidate:
		e.stats.ValidateRequests++
	case EndpointManagement:
		e.stats.ManagementRequests++
		return
	case EndpointAPI:
		e.stats.APIRequests++
		return
	}
	if q := r.URL.Query(); q.Has("client_id") || q.Has("client_secret") {
		e.stats.CredentialsInQuery++
	}
}

// wait applies the configured latency; it reports false when the client gave up first.
func (e *Emulator) wait(ctx context.Context) bool {
	e.mu.Lock()
	d := e.latency
	e.mu.Unlock()
	if d <= 0 {
		return true
	}
	return e.sleep(ctx, d)
}

// SetExpiresIn changes the lifetime of tokens issued from now on. It is reported in
// whole seconds; d <= 0 restores DefaultExpiresIn. Use a Fault of kind "expires_in" to
// send nonsense values.
func (e *Emulator) SetExpiresIn(d time.Duration) {
	if d <= 0 {
		d = DefaultExpiresIn
	}
	e.mu.Lock()
	e.expiresIn = d
	e.mu.Unlock()
}

// SetLatency delays every answer, the API stand-in's included, by d (real time, not the Config clock); a client that
// gives up meanwhile gets no answer. 0 removes the delay.
func (e *Emulator) SetLatency(d time.Duration) {
	e.mu.Lock()
	e.latency = d
	e.mu.Unlock()
}

// Stats returns the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.TokenInFlight = e.inFlight
	return s
}

// ResetStats sets every counter back to zero, and the in-flight peak to the number of
// token requests in flight now.
func (e *Emulator) ResetStats() {
	e.mu.Lock()
	e.stats = Stats{TokenInFlightPeak: e.inFlight}
	e.mu.Unlock()
}

// Tokens returns every token issued so far, oldest first.
func (e *Emulator) Tokens() []IssuedToken {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]IssuedToken, 0, len(e.issued))
	for _, rec := range e.issued {
		t := rec.IssuedToken
		t.Scopes = slices.Clone(t.Scopes)
		out = append(out, t)
	}
	return out
}

// TokenValid reports whether token was issued here, is not invalidated and has not expired.
func (e *Emulator) TokenValid(token string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.liveLocked(token) != nil
}

func (e *Emulator) liveLocked(token string) *tokenRecord {
	rec := e.tokens[token]
	if rec == nil || rec.Invalidated || !e.now().Before(rec.ExpiresAt) {
		return nil
	}
	return rec
}

// Secrets lists the credential's client secrets, oldest first, without their values.
func (e *Emulator) Secrets() []SecretInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]SecretInfo, 0, len(e.secrets))
	for _, s := range e.secrets {
		out = append(out, SecretInfo{UUID: s.uuid, CreatedAt: s.createdAt, LastUsedAt: s.lastUsedAt})
	}
	return out
}

// SecretAccepted reports whether a token request with this client secret would succeed.
func (e *Emulator) SecretAccepted(secret string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.secretLocked(secret) != nil
}

func (e *Emulator) secretLocked(value string) *clientSecret {
	for _, s := range e.secrets {
		if subtle.ConstantTimeCompare([]byte(s.value), []byte(value)) == 1 {
			return s
		}
	}
	return nil
}

// imsError is the error body adobe-ims.md documents for IMS.
type imsError struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentTypeJSON)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// ms renders t the way IMS and the I/O Management API do: milliseconds since the epoch.
func ms(t time.Time) string { return strconv.FormatInt(t.UnixMilli(), 10) }

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never returns an error since Go 1.24
	return b
}

// newDebugID returns a random id; its format is not documented by Adobe.
func newDebugID() string { return hex.EncodeToString(randomBytes(16)) }

// newUUID returns a client secret's uuid as Adobe's samples show them: 32 lowercase hex
// characters without dashes (here a random version 4 UUID).
func newUUID() string {
	b := randomBytes(16)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b)
}
