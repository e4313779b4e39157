package adobeims

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

const secretTokenType = "adobe_ims_token" //nolint:gosec // G101: Vault's name for the secret type, not a credential

const (
	keyRole        = "role"
	keyAccessToken = "access_token"
	keyTokenType   = "token_type"
	keyExpiresAt   = "expires_at"
	// keyClientID (the value for the x-api-key header) and keyOrgID (for
	// x-gw-ims-org-id) come from path_config.go; creds returns both, as
	// every Adobe API call needs the first and some the second.
)

// Lease internal data keys. Values are strings: numbers would come back as
// float64 through Vault's plugin gRPC layer.
const (
	internalRole        = "role"
	internalMode        = "mode"
	internalScopes      = "scopes"
	internalClientID    = "client_id"
	internalExpiresAt   = "expires_at"
	internalSafeEnd     = "safe_end"
	internalAccessToken = "access_token" // dedicated leases only, to invalidate the token on revoke
)

const (
	descCredsRole     = `Role whose scopes, mode and TTL caps apply.`
	descCredsClientID = "Client ID of the credential: send it as the \"x-api-key\" header with the token on every Adobe API call."
	descCredsOrgID    = "Adobe organization ID of the credential, when the config has one: send it as \"x-gw-ims-org-id\" to the APIs that take it."
)

func pathCreds(b *backend) []*framework.Path {
	op := func(suffix string) map[logical.Operation]framework.OperationHandler {
		return map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathCredsRead,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "generate",
					OperationSuffix: suffix,
				},
				Summary:   "Get an Adobe IMS access token as a lease.",
				Responses: okResponse(credsFields()),
			},
		}
	}
	return []*framework.Path{
		{
			Pattern:         "creds/?$",
			DisplayAttrs:    &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations:      op("credentials"),
			HelpSynopsis:    "Get a token with all of the config's scopes, shared by every reader.",
			HelpDescription: credsHelp,
		},
		{
			Pattern:      "creds/" + framework.GenericNameRegex(keyRole),
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Fields: map[string]*framework.FieldSchema{
				keyRole: {Type: framework.TypeString, Description: descCredsRole, Required: true},
			},
			Operations:      op("role-credentials"),
			HelpSynopsis:    "Get a token with the role's scopes, in the role's mode.",
			HelpDescription: credsHelp,
		},
	}
}

const credsHelp = `Returns access_token, token_type, expires_at (RFC 3339, UTC), scopes,
client_id (send it as the x-api-key header of every Adobe API call) and, when
the config has one, org_id (for APIs that take x-gw-ims-org-id), as a lease. The lease never outlives the token: its TTL is the smallest of the time
left until the token's safe end (its expiry less a margin of a tenth of its
life, at most 5 minutes), the role's ttl, and the mount's max lease TTL.
Renewing extends it up to the same bound.

In "shared" mode (always for "creds") one token per scope set is reused by
every reader and replaced in the background once a third of its life is left;
revoking the lease leaves the token alone. In "dedicated" mode every read mints
a new token and revoking the lease invalidates it at IMS.`

func secretToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type:   secretTokenType,
		Fields: credsFields(),
		Renew:  b.tokenRenew,
		Revoke: b.tokenRevoke,
	}
}

// credsRequest is what a creds read resolves to before it asks for a token.
type credsRequest struct {
	roleName string
	role     *role
	scopes   []string
}

func (b *backend) pathCredsRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	conn, err := b.connection(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), nil
	}

	cr := credsRequest{role: &role{Mode: modeShared}, scopes: conn.config.Scopes}
	if conn.refused != nil {
		return logical.ErrorResponse("this config cannot hand out tokens: " + conn.refused.Error() + "; write config scopes again without it"), nil
	}
	if name, ok := d.GetOk(keyRole); ok {
		cr.roleName = name.(string)
		r, err := b.role(ctx, req.Storage, cr.roleName)
		if err != nil {
			return nil, err
		}
		if r == nil {
			return logical.ErrorResponse(fmt.Sprintf("role %q does not exist: list roles with \"vault list <mount>/roles\"", cr.roleName)), nil
		}
		cr.role, cr.scopes = r, r.Scopes
	}

	var tok *tokencache.Token
	if cr.role.Mode == modeDedicated {
		// A dedicated token is state at IMS that only the active node's
		// revocations clean up, so performance standbys and secondaries
		// hand the read to the active node.
		if b.isPerformanceStandby() {
			return nil, logical.ErrReadOnly
		}
		tok, err = b.mint(ctx, conn.client, cr.scopes)
		b.metrics.dedicatedMints.Add(1)
	} else {
		var res tokencache.Result
		res, err = b.cache.Get(ctx, cr.scopes)
		tok = res.Token
		b.metrics.countSharedRead(res.Hit)
	}
	if err != nil {
		return credsErrorResponse(err)
	}
	// Vault reads a zero TTL as "the mount's default", which would let the
	// lease outlive the token: a token already at its safe end (a slow IMS
	// answer with a short-lived token) is never leased.
	if left := tok.SafeEnd().Sub(b.opts.now()); left <= 0 {
		if cr.role.Mode == modeDedicated {
			b.invalidateUnleased(ctx, conn.client, tok)
		}
		return nil, logical.CodedError(502, fmt.Sprintf("the token Adobe IMS issued expires at %s, too soon to lease (its safe end passed %s ago); read again, and check the IMS latency and this host's clock if it persists",
			tok.ExpiresAt.UTC().Format(time.RFC3339), (-left).Round(time.Millisecond)))
	}
	return b.credsResponse(cr, conn.config, tok), nil
}

// invalidateUnleased invalidates a dedicated token that no lease will
// revoke. It outlives the request: a caller that gave up must not leave a
// live token behind.
func (b *backend) invalidateUnleased(ctx context.Context, c *ims.Client, tok *tokencache.Token) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	b.metrics.invalidations.Add(1)
	if err := c.Invalidate(ctx, tok.AccessToken); err != nil {
		b.metrics.invalidationFailures.Add(1)
		b.logger("revoke").Warn("could not invalidate a dedicated token that was too close to its end to lease; it expires on its own", "expires_at", formatTime(tok.ExpiresAt), "error", err)
	}
}

func (b *backend) credsResponse(cr credsRequest, cfg *config, tok *tokencache.Token) *logical.Response {
	internal := map[string]any{
		internalRole:      cr.roleName,
		internalMode:      cr.role.Mode,
		internalScopes:    strings.Join(tok.Scopes, ","),
		internalClientID:  cfg.ClientID,
		internalExpiresAt: tok.ExpiresAt.UTC().Format(time.RFC3339Nano),
		internalSafeEnd:   tok.SafeEnd().UTC().Format(time.RFC3339Nano),
	}
	if cr.role.Mode == modeDedicated {
		internal[internalAccessToken] = tok.AccessToken
	}
	data := map[string]any{
		keyAccessToken: tok.AccessToken,
		keyTokenType:   tok.TokenType,
		keyExpiresAt:   tok.ExpiresAt.UTC().Format(time.RFC3339),
		keyScopes:      cr.scopes,
		keyClientID:    cfg.ClientID,
	}
	if cfg.OrgID != "" {
		data[keyOrgID] = cfg.OrgID
	}
	resp := b.Secret(secretTokenType).Response(data, internal)
	now := b.opts.now()
	resp.Secret.TTL, resp.Secret.MaxTTL = leaseBounds(cr.role, tok.SafeEnd().Sub(now), tok.SafeEnd().Sub(now))
	return resp
}

// leaseBounds caps a lease's TTL by the time left until the token's safe end
// and the role's ttl, and its whole life (counted from issue) by the time from
// issue to the safe end and the role's max_ttl. Vault further caps both by the
// mount's max lease TTL.
func leaseBounds(r *role, untilSafeEnd, issueToSafeEnd time.Duration) (ttl, maxTTL time.Duration) {
	ttl, maxTTL = untilSafeEnd, issueToSafeEnd
	if r.TTL > 0 {
		ttl = min(ttl, r.TTL)
	}
	if r.MaxTTL > 0 {
		maxTTL = min(maxTTL, r.MaxTTL)
	}
	return ttl, maxTTL
}

func credsErrorResponse(err error) (*logical.Response, error) {
	switch {
	case errors.Is(err, errNotConfigured):
		return logical.ErrorResponse(err.Error()), nil
	case errors.Is(err, logical.ErrReadOnly):
		return nil, logical.ErrReadOnly // Vault forwards the read to the active node
	}
	msg := fmt.Sprintf("getting a token from Adobe IMS: %v", err)
	if resp, coded := throttleResponse(msg, err); coded != nil {
		return resp, coded
	}
	return nil, logical.CodedError(http.StatusBadGateway, msg)
}

func (b *backend) tokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	safeEnd, err := internalTime(req.Secret.InternalData, internalSafeEnd)
	if err != nil {
		return nil, err
	}
	roleName, _ := req.Secret.InternalData[internalRole].(string)
	now := b.opts.now()
	if !now.Before(safeEnd) {
		return logical.ErrorResponse(fmt.Sprintf("the IMS token behind this lease reaches its end at %s and cannot be renewed: read %s again for a new token", safeEnd.UTC().Format(time.RFC3339), credsPath(roleName))), nil
	}

	r := &role{Mode: modeShared}
	if roleName != "" {
		if r, err = b.role(ctx, req.Storage, roleName); err != nil {
			return nil, err
		}
		if r == nil {
			return logical.ErrorResponse(fmt.Sprintf("role %q was deleted, so its leases are not renewed; they end at their current expiry", roleName)), nil
		}
	}
	resp := &logical.Response{Secret: req.Secret}
	resp.Secret.TTL, resp.Secret.MaxTTL = leaseBounds(r, safeEnd.Sub(now), safeEnd.Sub(req.Secret.IssueTime))
	if r.TTL > 0 {
		// A client's increment overrides the TTL returned here; only MaxTTL,
		// counted from issue, binds it. Keep the role's ttl a real cap.
		resp.Secret.MaxTTL = min(resp.Secret.MaxTTL, now.Sub(req.Secret.IssueTime)+r.TTL)
	}
	return resp, nil
}

func credsPath(roleName string) string {
	if roleName == "" {
		return "creds"
	}
	return "creds/" + roleName
}

// tokenRevoke ends a lease. Shared tokens are left alone: other leases hold
// them. Dedicated tokens are invalidated at IMS; anything that means the token
// cannot or need not be invalidated any more still ends the lease, and only
// failures worth retrying are returned, so that Vault retries the revocation.
func (b *backend) tokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	if mode, _ := req.Secret.InternalData[internalMode].(string); mode != modeDedicated {
		return nil, nil
	}
	token, _ := req.Secret.InternalData[internalAccessToken].(string)
	leaseClientID, _ := req.Secret.InternalData[internalClientID].(string)
	log := b.logger("revoke")
	if token == "" {
		return nil, nil
	}
	if expiresAt, err := internalTime(req.Secret.InternalData, internalExpiresAt); err == nil && !b.opts.now().Before(expiresAt) {
		return nil, nil // IMS already expired it
	}
	conn, err := b.connection(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if conn == nil {
		log.Info("config was deleted: ending a dedicated lease without invalidating its token at IMS; it expires on its own", "expires_at", req.Secret.InternalData[internalExpiresAt])
		return nil, nil
	}
	if conn.config.ClientID != leaseClientID {
		log.Warn("the config now holds another credential: ending a dedicated lease without invalidating its token at IMS; it expires on its own",
			"lease_client_id", leaseClientID, "expires_at", req.Secret.InternalData[internalExpiresAt])
		return nil, nil
	}
	b.metrics.invalidations.Add(1)
	if err := conn.client.Invalidate(ctx, token); err != nil {
		b.metrics.invalidationFailures.Add(1)
		var ie *ims.Error
		if errors.As(err, &ie) && !ie.Retryable() {
			log.Warn("IMS refused to invalidate a dedicated token; ending the lease anyway, the token expires on its own", "error", err)
			return nil, nil
		}
		return nil, fmt.Errorf("invalidating the lease's token at Adobe IMS (Vault retries the revocation): %w", err)
	}
	return nil, nil
}

func internalTime(data map[string]any, key string) (time.Time, error) {
	s, ok := data[key].(string)
	if !ok {
		return time.Time{}, fmt.Errorf("lease internal data has no %s: the lease was not issued by this plugin", key)
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("lease internal data %s %q: %w", key, s, err)
	}
	return t, nil
}
