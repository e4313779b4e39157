package adobeims

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// operationPrefix names this plugin's operations in Vault's OpenAPI document.
const operationPrefix = "adobe-ims"

// forwarded is an operation that changes state in storage or at Adobe:
// performance standbys and secondaries hand it to the active node. An empty
// suffix keeps the path's.
func forwarded(cb framework.OperationFunc, verb, suffix, summary string, responses map[int][]framework.Response) *framework.PathOperation {
	return &framework.PathOperation{
		Callback:                    cb,
		Summary:                     summary,
		Responses:                   responses,
		DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: verb, OperationSuffix: suffix},
		ForwardPerformanceStandby:   true,
		ForwardPerformanceSecondary: true,
	}
}

var errNotConfigured = errors.New(`the Adobe IMS secrets engine is not configured: write client_id, client_secret and scopes to "config" first`)

// rejectUnknownFields refuses fields the path does not define. Vault would
// only warn and ignore them, which hides typos such as "scope" for "scopes".
func rejectUnknownFields(d *framework.FieldData) error {
	var unknown []string
	for k := range d.Raw {
		if _, ok := d.Schema[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	known := make([]string, 0, len(d.Schema))
	for k := range d.Schema {
		known = append(known, k)
	}
	sort.Strings(known)
	return fmt.Errorf("unknown field(s) %s; this path takes %s", strings.Join(unknown, ", "), strings.Join(known, ", "))
}

// identifierPattern is what Adobe client IDs, org IDs and credential IDs
// look like: letters, digits and a few separators, no spaces.
var identifierPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]*$`)

func validateClientID(id string) error {
	return validateIdentifier(keyClientID, id, false)
}

func validateIdentifier(field, v string, optional bool) error {
	switch {
	case v == "" && optional:
		return nil
	case v == "":
		return fmt.Errorf("%s is empty: copy it from the Adobe Developer Console credential", field)
	case len(v) > maxClientIDLength:
		return fmt.Errorf("%s is %d characters long; at most %d are allowed: check that the right value was pasted", field, len(v), maxClientIDLength)
	case !identifierPattern.MatchString(v):
		return fmt.Errorf("%s %q has characters an Adobe identifier cannot have (only letters, digits, '.', '_', '@' and '-'): check that the right value was pasted", field, v)
	}
	return nil
}

// validateClientSecret never quotes the secret back.
func validateClientSecret(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("client_secret is empty: copy it from the Adobe Developer Console credential")
	case len(s) > maxClientSecretLength:
		return fmt.Errorf("client_secret is %d characters long; at most %d are allowed", len(s), maxClientSecretLength)
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("client_secret contains whitespace or control characters: check for a stray newline or space from copying it")
	}
	return nil
}

var scopePattern = regexp.MustCompile(`^[A-Za-z0-9_.:/-]+$`)

// validateScopes checks a scope list and returns it unchanged if it is valid.
func validateScopes(field string, scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, fmt.Errorf("%s is empty: give a comma-separated list such as \"openid,AdobeID,firefly_api\"", field)
	}
	if len(scopes) > maxScopes {
		return nil, fmt.Errorf("%s has %d items; at most %d are allowed", field, len(scopes), maxScopes)
	}
	seen := make(map[string]bool, len(scopes))
	for i, s := range scopes {
		switch {
		case s == "":
			return nil, fmt.Errorf("%s item %d is empty: remove the extra comma", field, i+1)
		case strings.ContainsFunc(s, unicode.IsSpace):
			return nil, fmt.Errorf("%s item %q contains a space: scopes are separated by commas, not spaces", field, s)
		case len(s) > maxScopeLength:
			return nil, fmt.Errorf("%s item %d is %d characters long; at most %d are allowed", field, i+1, len(s), maxScopeLength)
		case !scopePattern.MatchString(s):
			return nil, fmt.Errorf("%s item %q has characters a scope cannot have (letters, digits, '_', '.', ':', '/' and '-')", field, s)
		case seen[s]:
			return nil, fmt.Errorf("%s lists %q twice: list each scope once", field, s)
		}
		seen[s] = true
	}
	return slices.Clone(scopes), nil
}

// imsErrorResponse turns a failure into a Vault response. IMS refusing the
// request (4xx other than 429) is the caller's problem to fix: 400. Any
// other IMS failure means IMS could not serve it: 502. A failure that is not
// IMS's (storage, say) stays a plain error: 500.
func imsErrorResponse(doing string, err error) (*logical.Response, error) {
	msg := fmt.Sprintf("%s: %v", doing, err)
	if errors.Is(err, errNotConfigured) {
		return logical.ErrorResponse(err.Error()), nil
	}
	if resp, coded := throttleResponse(msg, err); coded != nil {
		return resp, coded
	}
	var ie *ims.Error
	switch {
	case !errors.As(err, &ie):
		return nil, fmt.Errorf("%s: %w", doing, err)
	case ie.StatusCode >= 400 && ie.StatusCode < 500 && ie.StatusCode != http.StatusTooManyRequests:
		return logical.ErrorResponse(msg), nil
	}
	return nil, logical.CodedError(http.StatusBadGateway, msg)
}

// formatTime is how responses show a moment: RFC 3339 in UTC, or "" for none.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// secretScopes are the scopes that let a token read or create the
// credential's client secrets through the I/O Management API. Vault asks
// for them only to rotate, in a token it never hands out: a creds token
// carrying them would let its reader make a client secret and see it.
var secretScopes = []string{"read_client_secret", "manage_client_secrets"}

// refuseSecretScopes keeps the secret scopes out of config, and so out of
// every role and every creds token.
func refuseSecretScopes(scopes []string) error {
	for _, s := range scopes {
		if slices.Contains(secretScopes, s) {
			return fmt.Errorf("scopes include %q, which lets a token create client secrets of this credential and read them: "+
				"remove it; Vault asks for the management scopes itself, only when it rotates the secret, and never puts them in a token it hands out", s)
		}
	}
	return nil
}
