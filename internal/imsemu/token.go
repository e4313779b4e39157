package imsemu

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// tokenResponse is the documented success body of /ims/token/v3; expires_in is in seconds.
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
}

// tokenClaims is the JWT payload. adobe-ims.md names these claims and says they are
// strings, with created_at and expires_in in milliseconds. The random id is ours.
type tokenClaims struct {
	ID        string `json:"id"`
	Type      string `json:"type"`
	ClientID  string `json:"client_id"`
	Scope     string `json:"scope"`
	AS        string `json:"as"`
	CreatedAt string `json:"created_at"`
	ExpiresIn string `json:"expires_in"`
}

// validateResponse is the body of /ims/validate_token/v1, an endpoint Adobe does not
// document; only valid, expires_at and token are known.
type validateResponse struct {
	Valid     bool         `json:"valid"`
	ExpiresAt int64        `json:"expires_at,omitempty"`
	Token     *tokenClaims `json:"token,omitempty"`
}

// jwtHeader is shaped like the header of Adobe's access tokens: RS256, with the
// certificate (x5u) and key id (kid) of an IMS signing key. adobe-ims.md documents no
// keys, so these names point at nothing and the random signature verifies against
// nothing: the token stays unverifiable locally, as IMS tokens are for their users.
var jwtHeader = base64.RawURLEncoding.EncodeToString([]byte(
	`{"alg":"RS256","x5u":"ims_na1-key-at-1.cer","kid":"ims_na1-key-at-1","typ":"JWT"}`))

// refusal is an IMS error answer: HTTP status plus the documented error body, and a
// Retry-After header when retryAfter is set.
type refusal struct {
	status     int
	retryAfter string
	imsError
}

func refuse(status int, code, description string) *refusal {
	return &refusal{status: status, imsError: imsError{Error: code, ErrorDescription: description}}
}

func (rf *refusal) write(w http.ResponseWriter) {
	if rf.retryAfter != "" {
		w.Header().Set("Retry-After", rf.retryAfter)
	}
	writeJSON(w, rf.status, rf.imsError)
}

// handleToken is POST /ims/token/v3 (client_credentials).
func (e *Emulator) handleToken(w http.ResponseWriter, r *http.Request) {
	resp, rf := e.issue(r)
	if rf != nil {
		e.mu.Lock()
		if rf.status == http.StatusTooManyRequests {
			e.stats.TokenThrottled++
		} else {
			e.stats.TokenErrors++
		}
		e.mu.Unlock()
		rf.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// issue mints a token for a valid request. Only invalid_client ("invalid client_secret
// parameter"), invalid_scope and the 429 of throttling are documented by Adobe; the
// wording of the other refusals (missing parameters, methods, grant types) and of the
// 429 is ours, and so is the order of the checks: the rate limit (see SetRateLimit)
// comes first, once the request names a client_id.
func (e *Emulator) issue(r *http.Request) (tokenResponse, *refusal) {
	if r.Method != http.MethodPost {
		return tokenResponse{}, refuse(http.StatusMethodNotAllowed, "invalid_request", "use POST")
	}
	// ParseForm reads the form body and the query string alike: Adobe accepts both.
	if err := r.ParseForm(); err != nil {
		return tokenResponse{}, refuse(http.StatusBadRequest, "invalid_request", "malformed request")
	}
	f := r.Form
	e.mu.Lock()
	rf := e.throttleLocked(f.Get("client_id"))
	e.mu.Unlock()
	if rf != nil {
		return tokenResponse{}, rf
	}
	switch f.Get("grant_type") {
	case "client_credentials":
	case "":
		return tokenResponse{}, refuse(http.StatusBadRequest, "invalid_request", "missing grant_type parameter")
	default:
		return tokenResponse{}, refuse(http.StatusBadRequest, "unsupported_grant_type", "unsupported grant_type parameter")
	}
	if rf := e.checkClientID(f); rf != nil {
		return tokenResponse{}, rf
	}
	// scope is ONE parameter holding a comma-separated list. How Adobe treats a repeated
	// scope parameter, blanks or empty items is not documented; the emulator refuses them
	// so that a client relying on leniency fails here rather than at Adobe.
	switch len(f["scope"]) {
	case 0:
		return tokenResponse{}, refuse(http.StatusBadRequest, "invalid_request", "missing scope parameter")
	case 1:
	default:
		return tokenResponse{}, refuse(http.StatusBadRequest, "invalid_request", "scope must be one comma-separated parameter")
	}
	scopes := strings.Split(f.Get("scope"), ",")

	e.mu.Lock()
	defer e.mu.Unlock()
	secret, rf := e.checkSecretLocked(f)
	if rf != nil {
		return tokenResponse{}, rf
	}
	var refused []string
	for _, s := range scopes {
		if !e.granted[s] {
			refused = append(refused, strconv.Quote(s))
		}
	}
	if len(refused) > 0 {
		return tokenResponse{}, refuse(http.StatusBadRequest, "invalid_scope", "invalid scope parameter: "+strings.Join(refused, ","))
	}
	rec := e.mintLocked(scopes, secret.uuid)
	secret.lastUsedAt = rec.IssuedAt
	return tokenResponse{
		AccessToken: rec.AccessToken,
		TokenType:   "bearer",
		ExpiresIn:   int64(rec.ExpiresAt.Sub(rec.IssuedAt) / time.Second),
	}, nil
}

func (e *Emulator) checkClientID(f url.Values) *refusal {
	switch id := f.Get("client_id"); {
	case id == "":
		return refuse(http.StatusBadRequest, "invalid_request", "missing client_id parameter")
	case id != e.clientID:
		// Documented: unknown client -> 400 invalid_client. The description is ours.
		return refuse(http.StatusBadRequest, "invalid_client", "invalid client_id parameter")
	}
	return nil
}

func (e *Emulator) checkSecretLocked(f url.Values) (*clientSecret, *refusal) {
	value := f.Get("client_secret")
	if value == "" {
		return nil, refuse(http.StatusBadRequest, "invalid_request", "missing client_secret parameter")
	}
	secret := e.secretLocked(value)
	if secret == nil {
		// Documented: 400 invalid_client, or 401 (SetWrongSecretStatus).
		return nil, refuse(e.wrongSecretStatus, "invalid_client", "invalid client_secret parameter")
	}
	return secret, nil
}

// mintLocked issues and records a token; every token is unique and earlier ones stay valid.
func (e *Emulator) mintLocked(scopes []string, secretUUID string) *tokenRecord {
	rec := e.newTokenLocked(scopes, secretUUID)
	e.tokens[rec.AccessToken] = rec
	e.issued = append(e.issued, rec)
	e.stats.TokensIssued++
	return rec
}

// newTokenLocked builds a JWT-shaped token with the configured lifetime, unrecorded.
func (e *Emulator) newTokenLocked(scopes []string, secretUUID string) *tokenRecord {
	now := e.now()
	lifetime := e.expiresIn.Truncate(time.Second)
	claims := tokenClaims{
		ID:        newDebugID(),
		Type:      "access_token",
		ClientID:  e.clientID,
		Scope:     strings.Join(scopes, ","),
		AS:        "ims-na1",
		CreatedAt: ms(now),
		ExpiresIn: strconv.FormatInt(lifetime.Milliseconds(), 10),
	}
	payload, _ := json.Marshal(claims) // a struct of strings always marshals
	return &tokenRecord{
		IssuedToken: IssuedToken{
			AccessToken: jwtHeader + "." +
				base64.RawURLEncoding.EncodeToString(payload) + "." +
				// A random "signature": IMS keys are not documented, so nobody can verify it.
				base64.RawURLEncoding.EncodeToString(randomBytes(256)),
			Scopes:     slices.Clone(scopes),
			IssuedAt:   now,
			ExpiresAt:  now.Add(lifetime),
			SecretUUID: secretUUID,
		},
		clientID: e.clientID,
		claims:   claims,
	}
}

// handleInvalidate is POST /ims/invalidate_token/v2, which answers 200 with an empty
// body. Adobe's answer for an unknown, expired or already invalidated token is not
// documented; the emulator answers 200 as well, matching the idempotent revoke that
// adobe-ims.md asks clients to assume. cascading=all is accepted and changes nothing:
// client_credentials has no refresh tokens to cascade to.
//
// It accepts what Adobe's own libraries send (adobe-ims.md): the X-IMS-ClientId header
// is optional (Adobe's Node library omits it), and so is client_secret for an access
// token (Adobe's Go client requires it only for service tokens). What is sent is
// checked: a header that differs from client_id, or a wrong client_secret, is refused
// (not documented by Adobe; a client sending either has a bug worth seeing).
func (e *Emulator) handleInvalidate(w http.ResponseWriter, r *http.Request) {
	if rf := e.invalidate(r); rf != nil {
		rf.write(w)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// invalidate words its refusals itself, except a bad client: not documented by Adobe.
func (e *Emulator) invalidate(r *http.Request) *refusal {
	if r.Method != http.MethodPost {
		return refuse(http.StatusMethodNotAllowed, "invalid_request", "use POST")
	}
	if err := r.ParseForm(); err != nil {
		return refuse(http.StatusBadRequest, "invalid_request", "malformed request")
	}
	f := r.Form
	if f.Get("client_id") == "" {
		return refuse(http.StatusBadRequest, "invalid_request", "missing client_id parameter")
	}
	if h := r.Header.Values("X-IMS-ClientId"); len(h) > 0 && (len(h) > 1 || h[0] != f.Get("client_id")) {
		return refuse(http.StatusBadRequest, "invalid_request", "X-IMS-ClientId header must match client_id")
	}
	if rf := e.checkClientID(f); rf != nil {
		return rf
	}
	if f.Get("token_type") != "access_token" {
		return refuse(http.StatusBadRequest, "invalid_request", "token_type must be access_token")
	}
	if f.Get("token") == "" {
		return refuse(http.StatusBadRequest, "invalid_request", "missing token parameter")
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if f.Get("client_secret") != "" { // optional; an empty one counts as absent
		if _, rf := e.checkSecretLocked(f); rf != nil {
			return rf
		}
	}
	if rec := e.liveLocked(f.Get("token")); rec != nil && rec.clientID == f.Get("client_id") {
		rec.Invalidated = true
		e.stats.Invalidated++
	}
	return nil
}

// handleValidate is POST /ims/validate_token/v1, which Adobe does not document beyond
// its parameters and the shape of its answer; the refusals are worded by us.
func (e *Emulator) handleValidate(w http.ResponseWriter, r *http.Request) {
	resp, rf := e.validate(r)
	if rf != nil {
		rf.write(w)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

func (e *Emulator) validate(r *http.Request) (validateResponse, *refusal) {
	if r.Method != http.MethodPost {
		return validateResponse{}, refuse(http.StatusMethodNotAllowed, "invalid_request", "use POST")
	}
	if err := r.ParseForm(); err != nil {
		return validateResponse{}, refuse(http.StatusBadRequest, "invalid_request", "malformed request")
	}
	f := r.Form
	if f.Get("type") != "access_token" {
		return validateResponse{}, refuse(http.StatusBadRequest, "invalid_request", "type must be access_token")
	}
	if rf := e.checkClientID(f); rf != nil {
		return validateResponse{}, rf
	}
	if f.Get("token") == "" {
		return validateResponse{}, refuse(http.StatusBadRequest, "invalid_request", "missing token parameter")
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	rec := e.liveLocked(f.Get("token"))
	if rec == nil || rec.clientID != f.Get("client_id") {
		return validateResponse{Valid: false}, nil
	}
	claims := rec.claims
	return validateResponse{Valid: true, ExpiresAt: rec.ExpiresAt.UnixMilli(), Token: &claims}, nil
}
