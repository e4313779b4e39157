package adobeims

import (
	"maps"
	"net/http"

	"github.com/hashicorp/vault/sdk/framework"
)

// What each operation returns, for Vault's OpenAPI document
// (sys/internal/specs/openapi) and the clients generated from it. A test
// checks every key a handler returns against these.

func okResponse(fields map[string]*framework.FieldSchema) map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusOK: {{Description: "OK", Fields: fields}}}
}

func noContent() map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusNoContent: {{Description: "No Content"}}}
}

// okOrWarnings is a write that answers 204, or 200 when it carries warnings.
func okOrWarnings() map[int][]framework.Response {
	return map[int][]framework.Response{
		http.StatusOK:        {{Description: "OK, with warnings"}},
		http.StatusNoContent: {{Description: "No Content"}},
	}
}

func stringField(desc string) *framework.FieldSchema {
	return &framework.FieldSchema{Type: framework.TypeString, Description: desc}
}

// credsFields are the data of a creds read, and the fields of its secret.
func credsFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyAccessToken: stringField(`Adobe IMS access token: send it as "Authorization: Bearer <token>".`),
		keyTokenType:   stringField(`Token type, "bearer".`),
		keyExpiresAt:   stringField("When IMS expires the token, RFC 3339 in UTC."),
		keyScopes:      {Type: framework.TypeCommaStringSlice, Description: "The token's scopes."},
		keyClientID:    stringField(descCredsClientID),
		keyOrgID:       stringField(descCredsOrgID),
	}
}

// rotationFields are what config reads and rotate-root show of rotation.
func rotationFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyClientSecretUUID:         stringField("Uuid at Adobe of the client secret Vault holds, once Vault has rotated it."),
		keyLastRotation:             stringField("When Vault last rotated the client secret, RFC 3339 in UTC."),
		keyNextRotation:             stringField("When the next scheduled rotation is due, RFC 3339 in UTC."),
		keyRotationPeriod:           {Type: framework.TypeDurationSecond, Description: "Rotation period in seconds; absent when off."},
		keyLastRotationError:        stringField("The error of the last failed automatic rotation, while it keeps failing."),
		keyRotationSchedule:         stringField("Cron schedule of automated rotation, when set."),
		keyRotationWindow:           {Type: framework.TypeDurationSecond, Description: "How long after a scheduled time rotation may still run, in seconds."},
		keyRotationPolicy:           stringField("Rotation policy passed to Vault's rotation manager (Enterprise)."),
		keyDisableAutomatedRotation: {Type: framework.TypeBool, Description: "Whether automated rotation is turned off while its schedule is kept."},
		keyLastVaultRotation:        {Type: framework.TypeTime, Description: "When Vault last rotated the client secret (the SDK's rotation info format)."},
		keyNextVaultRotation:        {Type: framework.TypeTime, Description: "When Vault rotates the client secret next; null when automated rotation is off."},
		keyRotationDriver:           stringField(`Who rotates the secret automatically: "vault_rotation_manager" (Vault Enterprise), "plugin_scheduler" (the plugin's own, on Community Edition), or "none".`),
	}
}

func configReadFields() map[string]*framework.FieldSchema {
	f := map[string]*framework.FieldSchema{
		keyClientID:        stringField(descClientID),
		keyScopes:          {Type: framework.TypeCommaStringSlice, Description: descScopes},
		keyIMSURL:          stringField(descIMSURL),
		keyOrgID:           stringField(descOrgID),
		keyCredentialID:    stringField(descCredentialID),
		keyIOManagementURL: stringField(descIOMgmtURL),
		keyPersistTokens:   {Type: framework.TypeBool, Description: descPersistTokens},
		keyMaxConcurrent:   {Type: framework.TypeInt, Description: descMaxConcurrent},
	}
	maps.Copy(f, rotationFields())
	return f
}

func rotateRootFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyClientSecretUUID:         stringField("Uuid at Adobe of the new client secret (never the secret)."),
		keyClientSecretCreatedAt:    stringField("When Adobe created the new secret, RFC 3339 in UTC."),
		keyPreviousClientSecretUUID: stringField("Uuid of the secret it replaced."),
		keyPreviousSecretDeleted:    {Type: framework.TypeBool, Description: "Whether the replaced secret was deleted at Adobe; if not, a warning says why and Vault deletes it later."},
		keyLastRotation:             rotationFields()[keyLastRotation],
		keyNextRotation:             rotationFields()[keyNextRotation],
	}
}

func roleReadFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		keyScopes: {Type: framework.TypeCommaStringSlice, Description: descRoleScopes},
		keyMode:   stringField(descRoleMode),
		keyTTL:    {Type: framework.TypeDurationSecond, Description: descRoleTTL},
		keyMaxTTL: {Type: framework.TypeDurationSecond, Description: descRoleMaxTTL},
	}
}

func roleListFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"keys": {Type: framework.TypeStringSlice, Description: "Role names."},
	}
}

func infoFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"version":         stringField("The plugin's version."),
		"configured":      {Type: framework.TypeBool, Description: "Whether config holds a credential."},
		keyThrottledUntil: stringField("While Adobe IMS throttles this credential, when the plugin asks it for tokens again (RFC 3339); empty otherwise. Until then no token request leaves the plugin."),
		keyIMSURL:         stringField("The IMS URL tokens are minted at."),
		keyClientID:       stringField("The credential's client ID."),
		"rotation":        {Type: framework.TypeMap, Description: "Rotation state, as config reads show it."},
		"counters":        {Type: framework.TypeMap, Description: "This node's counters since the plugin started, by name."},
		"shared_tokens": {Type: framework.TypeSlice, Description: "Per scope set with a shared token on this node: scopes, minted_at, expires_at, refresh_at, safe_end, " +
			"last_read, last_error, last_error_at, next_attempt. Never the token."},
	}
}

// metricsResponse is the Prometheus text exposition, not JSON.
func metricsResponse() map[int][]framework.Response {
	return map[int][]framework.Response{http.StatusOK: {{Description: "Counters in the Prometheus text exposition format.", MediaType: "text/plain"}}}
}
