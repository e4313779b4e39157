package adobeims

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

const configStorageKey = "config"

const (
	keyClientID        = "client_id"
	keyClientSecret    = "client_secret"
	keyScopes          = "scopes"
	keyIMSURL          = "ims_url"
	keyOrgID           = "org_id"
	keyCredentialID    = "credential_id" //nolint:gosec // G101: a field name, not a credential
	keyIOManagementURL = "io_management_url"
	keyVerify          = "verify"
	keyPersistTokens   = "persist_tokens"
	keyMaxConcurrent   = "max_concurrent_ims_requests"
)

const (
	descClientID      = `Client ID of the OAuth Server-to-Server credential, as the Adobe Developer Console shows it. Required.`
	descClientSecret  = `Client secret of the credential. Required when creating the config. Write-only: never returned, logged or put in an error. A write that changes client_id, ims_url or io_management_url must give client_secret too, so that nobody who can update config can send the stored secret somewhere new.`
	descScopes        = `Comma-separated scopes the Developer Console shows for this credential, e.g. "openid,AdobeID,firefly_api,ff_apis". Required. "creds" mints tokens with exactly these; roles may use any subset.`
	descIMSURL        = `Base URL of Adobe IMS. Defaults to "` + ims.DefaultURL + `". Must be https; plain http is accepted only for loopback hosts. Changing it requires giving client_secret in the same write.`
	descOrgID         = `Adobe organization ID (e.g. "1234ABCD@AdobeOrg"), shown in the Developer Console project URL. Needed only for client-secret rotation.`
	descCredentialID  = `Developer Console credential ID, shown in the credential's URL. Needed only for client-secret rotation.`
	descIOMgmtURL     = `Base URL of the Adobe I/O Management API, used by rotation. Defaults to "` + ims.DefaultManagementURL + `". Same URL rules as ims_url, and changing it likewise requires giving client_secret in the same write.`
	descPersistTokens = `Store shared tokens seal-wrapped, so that restarts, plugin reloads, upgrades and leader changes reuse them instead of asking IMS again (Adobe throttles integrations that mint too many tokens). Defaults to true. Set false to keep no bearer token at rest; every such event then mints anew.`
	descMaxConcurrent = `Token requests to Adobe IMS in flight at once for this mount, across scope sets and modes (1 to 64, default 4), so that a cold start over many roles or a burst of dedicated reads cannot stampede IMS. Reads beyond it wait within their own time limit.`
	descVerify        = `Mint one token with "scopes" before saving, and save nothing if IMS refuses. Defaults to true; not stored. Set false only to stage a config while IMS is unreachable.`
)

const (
	maxClientIDLength     = 255
	maxClientSecretLength = 1024
	maxScopes             = 100
	maxScopeLength        = 200
)

// config is the stored credential. It lives under a seal-wrapped key.
type config struct {
	ClientID        string   `json:"client_id"`
	ClientSecret    string   `json:"client_secret"`
	Scopes          []string `json:"scopes"`
	IMSURL          string   `json:"ims_url"`
	OrgID           string   `json:"org_id,omitempty"`
	CredentialID    string   `json:"credential_id,omitempty"`
	IOManagementURL string   `json:"io_management_url"`
	// PersistTokens is nil in configs of v0.1, which means true.
	PersistTokens *bool `json:"persist_tokens,omitempty"`
	// MaxConcurrentIMSRequests is 0 in configs of v0.1, which means the default.
	MaxConcurrentIMSRequests int `json:"max_concurrent_ims_requests,omitempty"`

	// Rotation. The uuid names the stored secret at Adobe, so that rotation
	// deletes only the secret Vault holds; it is empty until Vault rotates.
	ClientSecretUUID string `json:"client_secret_uuid,omitempty"`
	// SecretStamp is a random value drawn anew whenever the stored secret
	// changes, by a write or a rotation. A rotation's write-ahead log entry
	// keeps the stamp it started from, so that rolling it back can tell
	// whether the secret it replaced is still the one stored.
	SecretStamp       string    `json:"secret_stamp,omitempty"`
	LastRotation      time.Time `json:"last_rotation,omitzero"`
	RotationEnabledAt time.Time `json:"rotation_enabled_at,omitzero"`

	// Automated rotation: the SDK's standard fields. rotation_period kept
	// its v0.1 encoding, so configs stored by v0.1 load unchanged.
	RotationPeriod           time.Duration `json:"rotation_period,omitempty"`
	RotationSchedule         string        `json:"rotation_schedule,omitempty"`
	RotationWindow           time.Duration `json:"rotation_window,omitempty"`
	DisableAutomatedRotation bool          `json:"disable_automated_rotation,omitempty"`
	RotationPolicy           string        `json:"rotation_policy,omitempty"`
	// RotationJobID is the id Vault's rotation manager gave the job; empty
	// when the plugin's own scheduler drives rotation (Community Edition).
	RotationJobID string `json:"rotation_job_id,omitempty"`
}

// String, GoString and Format print the config with its client secret
// replaced by redact.Marker, whatever the verb: a log line, an error or a
// panic message that formats a config cannot carry the secret. JSON, and so
// storage, still holds it.
func (c config) String() string                { return fmt.Sprint(c.withoutSecrets()) }
func (c config) GoString() string              { return fmt.Sprintf("%#v", c.withoutSecrets()) }
func (c config) Format(f fmt.State, verb rune) { redact.Format(f, verb, c.withoutSecrets()) }

// redactedConfig is a config without its methods, to be formatted.
type redactedConfig config

func (c config) withoutSecrets() redactedConfig {
	v := redactedConfig(c)
	v.ClientSecret = redact.Secret(c.ClientSecret)
	return v
}

func configFields() map[string]*framework.FieldSchema {
	fields := map[string]*framework.FieldSchema{
		keyClientID:     {Type: framework.TypeString, Description: descClientID},
		keyClientSecret: {Type: framework.TypeString, Description: descClientSecret, DisplayAttrs: &framework.DisplayAttributes{Sensitive: true}},
		keyScopes:       {Type: framework.TypeCommaStringSlice, Description: descScopes},
		keyIMSURL:       {Type: framework.TypeString, Description: descIMSURL, Default: ims.DefaultURL},
		keyOrgID:        {Type: framework.TypeString, Description: descOrgID},
		keyCredentialID: {Type: framework.TypeString, Description: descCredentialID},
		keyIOManagementURL: {
			Type: framework.TypeString, Description: descIOMgmtURL, Default: ims.DefaultManagementURL,
		},
		keyVerify:        {Type: framework.TypeBool, Description: descVerify, Default: true},
		keyPersistTokens: {Type: framework.TypeBool, Description: descPersistTokens, Default: true},
		keyMaxConcurrent: {Type: framework.TypeInt, Description: descMaxConcurrent, Default: imsgate.DefaultLimit},
	}
	automatedrotationutil.AddAutomatedRotationFieldsWithGroup(fields, "Rotation")
	return fields
}

func pathConfig(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: operationPrefix,
		},
		Fields:         configFields(),
		ExistenceCheck: b.configExists,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback:     b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{OperationSuffix: "configuration", OperationVerb: "read"},
				Summary:      "Read the credential's settings; the client secret is never returned.",
				Responses:    okResponse(configReadFields()),
			},
			logical.CreateOperation: forwarded(b.exclusively(opConfigWrite, b.pathConfigWrite), "write", "configuration",
				"Store the credential, after minting one token with it unless verify=false.", okOrWarnings()),
			logical.UpdateOperation: forwarded(b.exclusively(opConfigWrite, b.pathConfigWrite), "write", "configuration",
				"Change the fields given, after minting one token with the result unless verify=false.", okOrWarnings()),
			logical.DeleteOperation: forwarded(b.exclusively(opConfigDelete, b.pathConfigDelete), "delete", "configuration",
				"Delete the credential and drop every cached token.", noContent()),
		},
		HelpSynopsis: "The Adobe Developer Console OAuth Server-to-Server credential that tokens are minted with.",
		HelpDescription: `Holds the client ID and client secret of one OAuth Server-to-Server credential,
the scopes it was granted, and the IMS URL. The client secret is write-only and
stored seal-wrapped. Writes change only the fields given; each write mints one
token first (verify=true) so a wrong secret or scope is refused before it is
saved. Changing or deleting the config drops every cached token; leases already
issued keep their tokens until they end.`,
	}
}

func (b *backend) configExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := getConfig(ctx, req.Storage)
	return cfg != nil, err
}

func getConfig(ctx context.Context, s logical.Storage) (*config, error) {
	return getJSON[config](ctx, s, configStorageKey, "config")
}

func putConfig(ctx context.Context, s logical.Storage, cfg *config) error {
	entry, err := logical.StorageEntryJSON(configStorageKey, cfg)
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing config to storage: %w", err)
	}
	return nil
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil || cfg == nil {
		return nil, err
	}
	st, err := getRotationStatus(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	data := map[string]any{
		keyClientID:        cfg.ClientID,
		keyScopes:          cfg.Scopes,
		keyIMSURL:          cfg.IMSURL,
		keyOrgID:           cfg.OrgID,
		keyCredentialID:    cfg.CredentialID,
		keyIOManagementURL: cfg.IOManagementURL,
		keyPersistTokens:   cfg.persistTokens(),
		keyMaxConcurrent:   cfg.maxConcurrentIMSRequests(),
	}
	maps.Copy(data, rotationState(cfg, st, b.opts.now()))
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := rejectUnknownFields(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	old, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg, err := mergeConfig(old, d)
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err := checkRolesFitScopes(ctx, req.Storage, cfg.Scopes); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	scheduleRotation(cfg, old, b.opts.now())

	var verified *tokencache.Token
	if d.Get(keyVerify).(bool) {
		verified, err = b.mint(ctx, b.newIMSClient(cfg), cfg.Scopes)
		if err != nil {
			return imsErrorResponse("verifying the credential (nothing was saved; set verify=false to save without minting a token)", err)
		}
	}
	// Only a write that will be saved tells Vault's rotation manager.
	if err := b.registerRotation(ctx, req, cfg, old); err != nil {
		return nil, err
	}

	if err := putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	gen := b.useConfig(old, cfg)
	if old != nil && (!sameCredential(old, cfg) || !cfg.persistTokens()) {
		if err := dropPersistedTokens(ctx, req.Storage); err != nil {
			return nil, err
		}
	}
	if verified != nil {
		b.cache.Put(verified, gen)
	}
	// A changed config may have fixed what made automatic rotation fail:
	// let the next periodic check try again without waiting out the back-off.
	if err := deleteRotationStatus(ctx, req.Storage); err != nil {
		return nil, err
	}
	if cfg.RotationPeriod > 0 && cfg.RotationPeriod < advisedMinRotationPeriod && (old == nil || old.RotationPeriod != cfg.RotationPeriod) {
		resp := &logical.Response{}
		resp.AddWarning(fmt.Sprintf("rotation_period %s is shorter than %s: fit for testing; in production each rotation mints two tokens and changes the credential at Adobe, which may throttle it", cfg.RotationPeriod, advisedMinRotationPeriod))
		return resp, nil
	}
	return nil, nil
}

// mergeConfig applies the fields given in d to a copy of old (nil when
// creating) and validates the result.
func mergeConfig(old *config, d *framework.FieldData) (*config, error) {
	cfg := &config{IMSURL: ims.DefaultURL, IOManagementURL: ims.DefaultManagementURL}
	if old != nil {
		c := *old
		cfg = &c
		cfg.Scopes = slices.Clone(old.Scopes)
	}

	if v, ok := d.GetOk(keyClientID); ok {
		id := strings.TrimSpace(v.(string))
		if err := validateClientID(id); err != nil {
			return nil, err
		}
		cfg.ClientID = id
	}
	if v, ok := d.GetOk(keyClientSecret); ok {
		if err := validateClientSecret(v.(string)); err != nil {
			return nil, err
		}
		cfg.ClientSecret = v.(string)
	}
	// A secret given here may be any of the credential's, and a new client_id
	// is another credential: the stored uuid no longer names the secret.
	if old == nil || cfg.ClientID != old.ClientID || cfg.ClientSecret != old.ClientSecret {
		cfg.ClientSecretUUID = ""
		cfg.SecretStamp = newSecretStamp()
	}
	if old != nil && cfg.ClientID != old.ClientID {
		cfg.LastRotation = time.Time{}
	}
	if err := mergeRotationFields(cfg, d); err != nil {
		return nil, err
	}
	if v, ok := d.GetOk(keyMaxConcurrent); ok {
		n := v.(int)
		if n < imsgate.MinLimit || n > imsgate.MaxLimit {
			return nil, fmt.Errorf("max_concurrent_ims_requests %d is out of range: give %d to %d (default %d)", n, imsgate.MinLimit, imsgate.MaxLimit, imsgate.DefaultLimit)
		}
		cfg.MaxConcurrentIMSRequests = n
	}
	if v, ok := d.GetOk(keyPersistTokens); ok {
		persist := v.(bool)
		cfg.PersistTokens = &persist
	}
	if v, ok := d.GetOk(keyScopes); ok {
		scopes, err := validateScopes(keyScopes, v.([]string))
		if err != nil {
			return nil, err
		}
		if err := refuseSecretScopes(scopes); err != nil {
			return nil, err
		}
		cfg.Scopes = scopes
	}
	for _, u := range []struct {
		key string
		dst *string
	}{{keyIMSURL, &cfg.IMSURL}, {keyIOManagementURL, &cfg.IOManagementURL}} {
		if v, ok := d.GetOk(u.key); ok {
			parsed, err := ims.ParseBaseURL(u.key, v.(string))
			if err != nil {
				return nil, err
			}
			*u.dst = parsed
		}
	}
	if v, ok := d.GetOk(keyOrgID); ok {
		if err := validateIdentifier(keyOrgID, v.(string), true); err != nil {
			return nil, err
		}
		cfg.OrgID = v.(string)
	}
	if v, ok := d.GetOk(keyCredentialID); ok {
		if err := validateIdentifier(keyCredentialID, v.(string), true); err != nil {
			return nil, err
		}
		cfg.CredentialID = v.(string)
	}

	if err := checkSecretStaysHome(old, cfg, d); err != nil {
		return nil, err
	}

	var missing []string
	if cfg.ClientID == "" {
		missing = append(missing, keyClientID)
	}
	if cfg.ClientSecret == "" {
		missing = append(missing, keyClientSecret)
	}
	if len(cfg.Scopes) == 0 {
		missing = append(missing, keyScopes)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing required field(s) %s: the config needs client_id, client_secret and scopes from the Adobe Developer Console credential", strings.Join(missing, ", "))
	}
	if rotationDriver(cfg) != driverNone {
		if err := checkRotatable(cfg); err != nil {
			return nil, fmt.Errorf("automated rotation is on, and %w", err)
		}
	}
	return cfg, nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	old, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	// A rotation job left with Vault's rotation manager would call back for
	// a config that no longer exists.
	if old != nil {
		none := *old
		none.RotationPeriod, none.RotationSchedule = 0, ""
		if err := b.registerRotation(ctx, req, &none, old); err != nil {
			return nil, err
		}
	}
	if err := req.Storage.Delete(ctx, configStorageKey); err != nil {
		return nil, fmt.Errorf("deleting config: %w", err)
	}
	b.useConfig(nil, nil)
	if err := dropPersistedTokens(ctx, req.Storage); err != nil {
		return nil, err
	}
	if err := deleteRotationStatus(ctx, req.Storage); err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, throttleStorageKey); err != nil {
		return nil, fmt.Errorf("deleting the stored throttle window: %w", err)
	}
	return nil, nil
}

// checkSecretStaysHome refuses a write that would send the stored client
// secret, or a token minted with it, somewhere new: a changed client_id, IMS
// URL or I/O Management URL must come with the secret it is to be used with.
// Whoever can update config but does not know the secret could otherwise
// point ims_url at a host of theirs and have verify (or any later mint) post
// the stored secret to it, or point io_management_url at one and have
// rotate-root hand it a token that manages the credential's secrets.
//
// It compares the merged result with what is stored rather than looking at
// which fields were given, so that no way of changing these fields, now or
// later, can get around it.
func checkSecretStaysHome(old, cfg *config, d *framework.FieldData) error {
	if old == nil {
		return nil
	}
	if _, given := d.GetOk(keyClientSecret); given {
		return nil
	}
	var moved []string
	for _, f := range []struct {
		key      string
		old, new string
	}{
		{keyClientID, old.ClientID, cfg.ClientID},
		{keyIMSURL, old.IMSURL, cfg.IMSURL},
		{keyIOManagementURL, old.IOManagementURL, cfg.IOManagementURL},
	} {
		if f.old != f.new {
			moved = append(moved, fmt.Sprintf("%s from %q to %q", f.key, f.old, f.new))
		}
	}
	if len(moved) == 0 {
		return nil
	}
	return fmt.Errorf("this write changes %s, which decides where the client secret and tokens minted with it are sent: "+
		"give client_secret in the same write (the secret for that client and host); nothing was saved or sent",
		strings.Join(moved, " and "))
}

// newSecretStamp draws a SecretStamp.
func newSecretStamp() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// persistTokens says whether shared tokens are stored; true unless turned off.
func (c *config) persistTokens() bool { return c.PersistTokens == nil || *c.PersistTokens }

// maxConcurrentIMSRequests is the cap on token requests in flight.
func (c *config) maxConcurrentIMSRequests() int {
	if c.MaxConcurrentIMSRequests == 0 {
		return imsgate.DefaultLimit
	}
	return c.MaxConcurrentIMSRequests
}
