package imsemu

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

var secretsPath = prefixManagement + DefaultOrgID + "/credentials/" + DefaultCredentialID + "/secrets"

// mgmt calls the I/O Management API with the documented headers.
func (h *harness) mgmt(method, path, token, apiKey string) response {
	h.t.Helper()
	req := h.request(method, path, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if apiKey != "" {
		req.Header.Set("x-api-key", apiKey)
	}
	return h.do(req)
}

type listBody struct {
	ClientID      string `json:"client_id"`
	ClientSecrets []struct {
		UUID         string           `json:"uuid"`
		CreatedAt    string           `json:"created_at"`
		CreatedAtStr string           `json:"created_at_str"`
		ExpiresAt    string           `json:"expires_at"`
		ExpiresAtStr string           `json:"expires_at_str"`
		SecretUsages []map[string]any `json:"secret_usages"`
	} `json:"client_secrets"`
}

func (h *harness) list(token string) listBody {
	h.t.Helper()
	r := h.mgmt(http.MethodGet, secretsPath, token, testClientID)
	if r.status != http.StatusOK {
		h.t.Fatalf("list: %d %s", r.status, r.body)
	}
	var l listBody
	if err := json.Unmarshal(r.body, &l); err != nil {
		h.t.Fatal(err)
	}
	for _, raw := range r.jsonMap(h.t)["client_secrets"].([]any) {
		if _, ok := raw.(map[string]any)["client_secret"]; ok {
			h.t.Errorf("list shows a secret's value: %s", r.body)
		}
	}
	return l
}

func TestManagementListCreateDelete(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)
	now := ms(h.clock.Now())

	l := h.list(token)
	initial := h.emu.Secrets()[0].UUID
	if l.ClientID != testClientID || len(l.ClientSecrets) != 1 {
		t.Fatalf("list %+v", l)
	}
	s := l.ClientSecrets[0]
	if s.UUID != initial || s.CreatedAt != now || s.ExpiresAt != "PERMANENT" ||
		s.CreatedAtStr != "2025-03-01T12:00:00.000Z" || s.ExpiresAtStr != "PERMANENT" ||
		len(s.SecretUsages) != 1 || s.SecretUsages[0]["last_used_at"] != now || s.SecretUsages[0]["grant_type"] != "client_credentials" {
		t.Errorf("secret entry %+v", s)
	}

	// POST: 201 and the only copy of the value.
	r := h.mgmt(http.MethodPost, secretsPath, token, testClientID)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	created := r.jsonMap(t)
	value, _ := created["client_secret"].(string)
	if value == "" || !nonEmpty(created, "uuid") || created["created_at"] != now || created["expires_at"] != "PERMANENT" {
		t.Errorf("create body %s", r.body)
	}
	if v, ok := created["secret_usages"]; !ok || v != nil {
		t.Errorf("secret_usages = %v (present %v), want null", v, ok)
	}
	// The documented POST answer has exactly these fields; the *_str ones are the list's.
	if len(created) != 5 {
		t.Errorf("create body %s, want client_secret, uuid, created_at, expires_at, secret_usages", r.body)
	}
	if !h.emu.SecretAccepted(value) || !h.emu.SecretAccepted(testSecret) {
		t.Error("both secrets should be accepted after create")
	}
	if l := h.list(token); len(l.ClientSecrets) != 2 || l.ClientSecrets[1].SecretUsages != nil {
		t.Errorf("list after create %+v: want 2 secrets, the new one unused", l)
	}

	// A third secret is refused: at most 2 exist.
	if r := h.mgmt(http.MethodPost, secretsPath, token, testClientID); r.status != http.StatusBadRequest || !nonEmpty(r.jsonMap(t), "error_code") {
		t.Errorf("third secret: %d %s, want 400 with error_code", r.status, r.body)
	}
	if got := len(h.emu.Secrets()); got != 2 {
		t.Errorf("%d secrets, want 2", got)
	}

	newToken := h.mint(value, "openid")
	if got := h.emu.Tokens()[1].SecretUUID; got != created["uuid"] {
		t.Errorf("token minted with new secret records uuid %q, want %v", got, created["uuid"])
	}

	// Delete the old secret: refused for new tokens, earlier tokens stay valid.
	r = h.mgmt(http.MethodDelete, secretsPath+"/"+initial, token, testClientID)
	if r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Fatalf("delete: %d %q, want 204", r.status, r.body)
	}
	if h.emu.SecretAccepted(testSecret) {
		t.Error("deleted secret still accepted")
	}
	if r := h.postForm(pathToken, tokenForm(testSecret, "openid")); r.status != http.StatusBadRequest || r.jsonMap(t)["error"] != "invalid_client" {
		t.Errorf("token with deleted secret: %d %s, want 400 invalid_client", r.status, r.body)
	}
	if !h.emu.TokenValid(token) || !h.emu.TokenValid(newToken) {
		t.Error("deleting a secret invalidated tokens")
	}
	if l := h.list(token); len(l.ClientSecrets) != 1 || l.ClientSecrets[0].UUID != created["uuid"] {
		t.Errorf("list after delete %+v", l)
	}
	if r := h.mgmt(http.MethodDelete, secretsPath+"/"+initial, token, testClientID); r.status != http.StatusNotFound || !nonEmpty(r.jsonMap(t), "error_code") {
		t.Errorf("deleting again: %d %s, want 404", r.status, r.body)
	}
	if got := h.emu.Stats().ManagementRequests; got != 7 {
		t.Errorf("ManagementRequests = %d, want 7", got)
	}
}

func TestManagementRefusals(t *testing.T) {
	h := newHarness(t)
	good := h.mint(testSecret, mgmtScope)
	firefly := h.mint(testSecret, fireflyScope)
	invalidated := h.mint(testSecret, mgmtScope)
	h.postForm(pathInvalidate, invalidateForm(invalidated, testSecret), "X-IMS-ClientId", testClientID)

	tests := []struct {
		name, method, path, token, apiKey string
		status                            int
	}{
		{"no token", http.MethodGet, secretsPath, "", testClientID, 401},
		{"no token on create", http.MethodPost, secretsPath, "", testClientID, 401},
		{"unknown token", http.MethodGet, secretsPath, "bogus", testClientID, 401},
		{"invalidated token", http.MethodGet, secretsPath, invalidated, testClientID, 401},
		{"token without management scopes", http.MethodPost, secretsPath, firefly, testClientID, 403},
		{"no api key", http.MethodGet, secretsPath, good, "", 403},
		{"wrong api key", http.MethodPost, secretsPath, good, "someone-else", 403},
		{"wrong org", http.MethodGet, strings.Replace(secretsPath, DefaultOrgID, "other@AdobeOrg", 1), good, testClientID, 404},
		{"wrong credential", http.MethodGet, strings.Replace(secretsPath, DefaultCredentialID, "other", 1), good, testClientID, 404},
		{"unknown sub-path", http.MethodGet, secretsPath + "/x/y", good, testClientID, 404},
		{"PUT", http.MethodPut, secretsPath, good, testClientID, 405},
		{"GET one secret", http.MethodGet, secretsPath + "/some-uuid", good, testClientID, 405},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h.mgmt(tc.method, tc.path, tc.token, tc.apiKey)
			body := r.jsonMap(t)
			if r.status != tc.status || !nonEmpty(body, "error_code") || !nonEmpty(body, "message") {
				t.Errorf("got %d %s, want %d with error_code and message", r.status, r.body, tc.status)
			}
		})
	}
	if got := len(h.emu.Secrets()); got != 1 {
		t.Errorf("refused requests changed the secrets: %d", got)
	}
}

func TestManagementTokenExpires(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)
	h.clock.Advance(DefaultExpiresIn)
	if r := h.mgmt(http.MethodGet, secretsPath, token, testClientID); r.status != http.StatusUnauthorized {
		t.Errorf("expired token: %d %s, want 401", r.status, r.body)
	}
}

func TestManagementEscapedOrgID(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)
	path := strings.Replace(secretsPath, "@", "%40", 1)
	if r := h.mgmt(http.MethodGet, path, token, testClientID); r.status != http.StatusOK {
		t.Errorf("org id with %%40: %d %s", r.status, r.body)
	}
}

var uuidFormat = regexp.MustCompile(`^[0-9a-f]{32}$`)

// TestSecretUUIDsAndTimeStrings: uuids are 32 lowercase hex characters without dashes, as
// in Adobe's samples, and list entries carry created_at_str and expires_at_str.
func TestSecretUUIDsAndTimeStrings(t *testing.T) {
	h := newHarness(t)
	token := h.mint(testSecret, mgmtScope)
	initialAt := h.clock.Now()
	h.clock.Advance(90*time.Minute + 1500*time.Millisecond)
	r := h.mgmt(http.MethodPost, secretsPath, token, testClientID)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	createdUUID, _ := r.jsonMap(t)["uuid"].(string)

	l := h.list(token)
	if len(l.ClientSecrets) != 2 {
		t.Fatalf("list %+v, want 2 secrets", l)
	}
	tests := []struct {
		name, uuid, createdAt, createdAtStr string
	}{
		{"initial secret", h.emu.Secrets()[0].UUID, ms(initialAt), "2025-03-01T12:00:00.000Z"},
		{"created secret", createdUUID, ms(h.clock.Now()), "2025-03-01T13:30:01.500Z"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := l.ClientSecrets[i]
			if !uuidFormat.MatchString(tc.uuid) || s.UUID != tc.uuid {
				t.Errorf("uuid %q (listed %q), want 32 lowercase hex characters", tc.uuid, s.UUID)
			}
			if s.CreatedAt != tc.createdAt || s.CreatedAtStr != tc.createdAtStr || s.ExpiresAt != "PERMANENT" || s.ExpiresAtStr != "PERMANENT" {
				t.Errorf("entry %+v, want created_at %s, created_at_str %s, PERMANENT", s, tc.createdAt, tc.createdAtStr)
			}
		})
	}
	if tests[0].uuid == tests[1].uuid {
		t.Error("two secrets share a uuid")
	}
	// DELETE takes the uuid as listed.
	if r := h.mgmt(http.MethodDelete, secretsPath+"/"+createdUUID, token, testClientID); r.status != http.StatusNoContent {
		t.Errorf("delete by uuid: %d %s", r.status, r.body)
	}
}

func TestNewUUIDFormat(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		u := newUUID()
		if !uuidFormat.MatchString(u) || seen[u] {
			t.Fatalf("uuid %q repeated or not 32 lowercase hex characters", u)
		}
		seen[u] = true
	}
}
