package imsemu

import (
	"net/http"
	"slices"
	"strings"
)

// maxSecrets is documented: at most 2 client secrets exist per credential at a time.
const maxSecrets = 2

// managementError is the error body of the I/O Management API. Its shape and codes are
// not documented by Adobe; this one is ours.
type managementError struct {
	ErrorCode string `json:"error_code"`
	Message   string `json:"message"`
}

func writeManagementError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, managementError{ErrorCode: code, Message: message})
}

// secretFields are the fields of a client secret in both documented answers, the entries
// of GET .../secrets and the answer of POST .../secrets. Timestamps are millisecond
// strings and expires_at is "PERMANENT", as documented.
type secretFields struct {
	UUID      string `json:"uuid"`
	CreatedAt string `json:"created_at"`
	ExpiresAt string `json:"expires_at"`
	// SecretUsages is null for a secret never used, as in the documented POST answer;
	// what GET shows for it is not documented by Adobe.
	SecretUsages []secretUsage `json:"secret_usages"`
}

// listedSecret is one entry of GET .../secrets, which never carries a value. adobe-ims.md
// says list entries also carry created_at_str and expires_at_str, but not in what
// format: not documented by Adobe. The emulator writes created_at_str as RFC 3339 in
// UTC with milliseconds ("2023-05-02T05:36:17.000Z"), a plausible human-readable
// rendering of created_at, and expires_at_str as expires_at ("PERMANENT"). Clients
// should read created_at and expires_at.
type listedSecret struct {
	UUID         string        `json:"uuid"`
	CreatedAt    string        `json:"created_at"`
	CreatedAtStr string        `json:"created_at_str"`
	ExpiresAt    string        `json:"expires_at"`
	ExpiresAtStr string        `json:"expires_at_str"`
	SecretUsages []secretUsage `json:"secret_usages"`
}

// timeStrLayout renders created_at_str; see listedSecret.
const timeStrLayout = "2006-01-02T15:04:05.000Z07:00"

type secretUsage struct {
	LastUsedAt string `json:"last_used_at"`
	GrantType  string `json:"grant_type"`
}

// createdSecret is the answer of POST .../secrets: the only time a value is shown. Its
// documented shape has no *_str fields.
type createdSecret struct {
	ClientSecret string `json:"client_secret"`
	secretFields
}

type secretList struct {
	ClientID      string         `json:"client_id"`
	ClientSecrets []listedSecret `json:"client_secrets"`
}

func (s *clientSecret) fields() secretFields {
	f := secretFields{UUID: s.uuid, CreatedAt: ms(s.createdAt), ExpiresAt: "PERMANENT"}
	if !s.lastUsedAt.IsZero() {
		f.SecretUsages = []secretUsage{{LastUsedAt: ms(s.lastUsedAt), GrantType: "client_credentials"}}
	}
	return f
}

func (s *clientSecret) listed() listedSecret {
	f := s.fields()
	return listedSecret{
		UUID:         f.UUID,
		CreatedAt:    f.CreatedAt,
		CreatedAtStr: s.createdAt.UTC().Format(timeStrLayout),
		ExpiresAt:    f.ExpiresAt,
		ExpiresAtStr: f.ExpiresAt,
		SecretUsages: f.SecretUsages,
	}
}

// handleManagement serves
//
//	GET    /console/organizations/{orgId}/credentials/{credentialId}/secrets
//	POST   /console/organizations/{orgId}/credentials/{credentialId}/secrets
//	DELETE /console/organizations/{orgId}/credentials/{credentialId}/secrets/{uuid}
//
// The order of the checks (route, method, token, x-api-key, scopes, org and credential)
// and every status other than the documented 200, 201 and 204 are not documented by Adobe.
func (e *Emulator) handleManagement(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, prefixManagement), "/")
	if (len(parts) != 4 && len(parts) != 5) || parts[1] != "credentials" || parts[3] != "secrets" ||
		slices.Contains(parts, "") {
		writeManagementError(w, http.StatusNotFound, "not_found", "no such resource")
		return
	}
	allowed := []string{http.MethodGet, http.MethodPost}
	if len(parts) == 5 {
		allowed = []string{http.MethodDelete}
	}
	if !slices.Contains(allowed, r.Method) {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeManagementError(w, http.StatusMethodNotAllowed, "method_not_allowed", "allowed: "+strings.Join(allowed, ", "))
		return
	}

	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.authorizeLocked(w, r) {
		return
	}
	if parts[0] != e.orgID || parts[2] != e.credentialID {
		writeManagementError(w, http.StatusNotFound, "not_found", "no such organization or credential")
		return
	}
	switch r.Method {
	case http.MethodGet:
		list := secretList{ClientID: e.clientID, ClientSecrets: []listedSecret{}}
		for _, s := range e.secrets {
			list.ClientSecrets = append(list.ClientSecrets, s.listed())
		}
		writeJSON(w, http.StatusOK, list)
	case http.MethodPost:
		if len(e.secrets) >= maxSecrets {
			// The limit is documented; the status and wording of this refusal are not.
			writeManagementError(w, http.StatusBadRequest, "secret_limit_reached",
				"a credential has at most 2 client secrets; delete one first")
			return
		}
		// The format of a secret's value is not documented by Adobe.
		s := &clientSecret{uuid: newUUID(), value: newSecretValue(), createdAt: e.now()}
		e.secrets = append(e.secrets, s)
		writeJSON(w, http.StatusCreated, createdSecret{ClientSecret: s.value, secretFields: s.fields()})
	case http.MethodDelete:
		i := slices.IndexFunc(e.secrets, func(s *clientSecret) bool { return s.uuid == parts[4] })
		if i < 0 {
			writeManagementError(w, http.StatusNotFound, "not_found", "no such client secret")
			return
		}
		// Whether Adobe lets the last secret go is not documented; the emulator does.
		// Tokens already issued with the secret stay valid, as documented.
		e.secrets = slices.Delete(e.secrets, i, i+1)
		w.WriteHeader(http.StatusNoContent)
	}
}

// authorizeLocked checks the documented headers: Authorization: Bearer {token}, where
// the token carries the management scopes, and x-api-key: {client_id}.
func (e *Emulator) authorizeLocked(w http.ResponseWriter, r *http.Request) bool {
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		writeManagementError(w, http.StatusUnauthorized, "unauthorized", "missing bearer token")
		return false
	}
	rec := e.liveLocked(token)
	if rec == nil || rec.clientID != e.clientID {
		writeManagementError(w, http.StatusUnauthorized, "unauthorized", "invalid or expired access token")
		return false
	}
	if r.Header.Get("X-Api-Key") != rec.clientID {
		writeManagementError(w, http.StatusForbidden, "forbidden", "x-api-key must be the client_id the token was issued to")
		return false
	}
	var missing []string
	for _, s := range managementScopes {
		if !slices.Contains(rec.Scopes, s) {
			missing = append(missing, s)
		}
	}
	if len(missing) > 0 {
		writeManagementError(w, http.StatusForbidden, "forbidden", "token lacks scopes: "+strings.Join(missing, ","))
		return false
	}
	return true
}

func newSecretValue() string { return "emu-" + newDebugID() }
