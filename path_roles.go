package adobeims

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

const rolesStoragePrefix = "roles/"

const (
	keyName   = "name"
	keyMode   = "mode"
	keyTTL    = "ttl"
	keyMaxTTL = "max_ttl"

	modeShared    = "shared"
	modeDedicated = "dedicated"
)

const (
	descRoleName   = `Name of the role. Letters, digits, '-', '_' and '.'.`
	descRoleScopes = `Comma-separated scopes for this role's tokens; must be a subset of the config's scopes. Required.`
	descRoleMode   = `"shared" (default): every reader of this role gets the same cached token, minted once per scope set and replaced ahead of its expiry; revoking a lease does not touch the token. Cheap on IMS and fast. "dedicated": each read mints its own token and revoking the lease invalidates it at IMS. Use it when a token must die with its lease; it costs one IMS call per read and one per revocation, and Adobe throttles integrations that mint too many tokens.`
	descRoleTTL    = `Cap on a lease's TTL, e.g. "1h". 0 (default) means up to the token's safe end. Shorter leases let Vault Agent re-read sooner; the token behind a shared lease is still the same.`
	descRoleMaxTTL = `Cap on a lease's whole life, renewals included. 0 (default) means the token's safe end. A lease never outlives its token either way.`
)

// role is a stored role.
type role struct {
	Scopes []string      `json:"scopes"`
	Mode   string        `json:"mode"`
	TTL    time.Duration `json:"ttl"`
	MaxTTL time.Duration `json:"max_ttl"`
}

func (r *role) responseData() map[string]any {
	return map[string]any{
		keyScopes: r.Scopes,
		keyMode:   r.Mode,
		keyTTL:    int64(r.TTL.Seconds()),
		keyMaxTTL: int64(r.MaxTTL.Seconds()),
	}
}

func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathRolesList,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
					Summary:      "List the roles.",
					Responses:    okResponse(roleListFields()),
				},
			},
			HelpSynopsis:    "List the roles.",
			HelpDescription: "Lists the names of the roles defined under roles/.",
		},
		{
			Pattern: "roles/" + framework.GenericNameRegex(keyName),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: operationPrefix,
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				keyName:   {Type: framework.TypeString, Description: descRoleName, Required: true},
				keyScopes: {Type: framework.TypeCommaStringSlice, Description: descRoleScopes},
				keyMode: {
					Type: framework.TypeString, Description: descRoleMode, Default: modeShared,
					AllowedValues: []any{modeShared, modeDedicated},
				},
				keyTTL:    {Type: framework.TypeDurationSecond, Description: descRoleTTL},
				keyMaxTTL: {Type: framework.TypeDurationSecond, Description: descRoleMaxTTL},
			},
			ExistenceCheck: b.roleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathRoleRead,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
					Summary:      "Read a role.",
					Responses:    okResponse(roleReadFields()),
				},
				logical.CreateOperation: forwarded(b.exclusively(opRoleWrite, b.pathRoleWrite), "write", "", "Create a role.", noContent()),
				logical.UpdateOperation: forwarded(b.exclusively(opRoleWrite, b.pathRoleWrite), "write", "", "Change the fields given of a role.", noContent()),
				logical.DeleteOperation: forwarded(b.pathRoleDelete, "delete", "", "Delete a role. Its leases keep their tokens until they end.", noContent()),
			},
			HelpSynopsis: "A named scope set and lease policy for tokens read from creds/<name>.",
			HelpDescription: `A role picks the scopes of its tokens (a subset of the config's), whether
readers share one cached token ("shared") or each get their own that dies with
the lease ("dedicated"), and caps on the lease's ttl and max_ttl. Policies can
then grant applications read on creds/<name> for just the roles they need.`,
		},
	}
}

func getRole(ctx context.Context, s logical.Storage, name string) (*role, error) {
	return getJSON[role](ctx, s, rolesStoragePrefix+name, fmt.Sprintf("role %q", name))
}

// role is getRole through the backend's role cache, for the read path.
func (b *backend) role(ctx context.Context, s logical.Storage, name string) (*role, error) {
	if r, ok := b.roles.Load(name); ok {
		return r.(*role), nil
	}
	gen := b.rolesGen.Load()
	r, err := getRole(ctx, s, name)
	if err != nil || r == nil {
		return r, err
	}
	// A write that landed while this read was in flight may have stored a
	// newer role than r: then r is used once but not cached.
	if b.rolesGen.Load() == gen {
		b.roles.Store(name, r)
	}
	return r, nil
}

// forgetRole drops a cached role after its storage changed.
func (b *backend) forgetRole(name string) {
	b.rolesGen.Add(1)
	b.roles.Delete(name)
}

func (b *backend) roleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	r, err := getRole(ctx, req.Storage, d.Get(keyName).(string))
	return r != nil, err
}

func (b *backend) pathRolesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, rolesStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	r, err := getRole(ctx, req.Storage, d.Get(keyName).(string))
	if err != nil || r == nil {
		return nil, err
	}
	return &logical.Response{Data: r.responseData()}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if err := rejectUnknownFields(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	name := d.Get(keyName).(string)
	old, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return logical.ErrorResponse(`write "config" before roles: a role's scopes must be a subset of the config's`), nil
	}
	r, err := mergeRole(old, d, cfg.Scopes)
	if err != nil {
		return logical.ErrorResponse(fmt.Sprintf("role %q: %v", name, err)), nil
	}

	entry, err := logical.StorageEntryJSON(rolesStoragePrefix+name, r)
	if err != nil {
		return nil, fmt.Errorf("encoding role %q: %w", name, err)
	}
	if err := req.Storage.Put(ctx, entry); err != nil {
		return nil, fmt.Errorf("writing role %q: %w", name, err)
	}
	b.forgetRole(name)
	if old != nil && tokencache.Key(old.Scopes) != tokencache.Key(r.Scopes) {
		b.cache.Drop(old.Scopes)
	}
	return nil, nil
}

func mergeRole(old *role, d *framework.FieldData, configScopes []string) (*role, error) {
	r := &role{Mode: modeShared}
	if old != nil {
		c := *old
		r = &c
	}
	if v, ok := d.GetOk(keyScopes); ok {
		scopes, err := validateScopes(keyScopes, v.([]string))
		if err != nil {
			return nil, err
		}
		r.Scopes = scopes
	}
	if len(r.Scopes) == 0 {
		return nil, fmt.Errorf("scopes is required: give a comma-separated subset of the config's scopes (%s)", strings.Join(configScopes, ","))
	}
	if extra := missingFrom(r.Scopes, configScopes); len(extra) > 0 {
		return nil, fmt.Errorf("scopes %s are not in the config's scopes (%s): a role can only narrow the credential's scopes", strings.Join(extra, ","), strings.Join(configScopes, ","))
	}
	if v, ok := d.GetOk(keyMode); ok {
		mode := strings.ToLower(strings.TrimSpace(v.(string)))
		if mode != modeShared && mode != modeDedicated {
			return nil, fmt.Errorf("mode %q is not known: use %q or %q", v, modeShared, modeDedicated)
		}
		r.Mode = mode
	}
	for _, f := range []struct {
		key string
		dst *time.Duration
	}{{keyTTL, &r.TTL}, {keyMaxTTL, &r.MaxTTL}} {
		if v, ok := d.GetOk(f.key); ok {
			secs := v.(int)
			if secs < 0 {
				return nil, fmt.Errorf("%s is negative: give a duration such as \"1h\", or 0 for no cap", f.key)
			}
			*f.dst = time.Duration(secs) * time.Second
		}
	}
	if r.TTL > 0 && r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		return nil, fmt.Errorf("ttl (%s) is longer than max_ttl (%s): lower ttl or raise max_ttl", r.TTL, r.MaxTTL)
	}
	return r, nil
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get(keyName).(string)
	old, err := getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Delete(ctx, rolesStoragePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting role %q: %w", name, err)
	}
	b.forgetRole(name)
	if old != nil {
		b.cache.Drop(old.Scopes)
	}
	return nil, nil
}

// checkRolesFitScopes refuses a config scope change that would leave a role
// asking for scopes the credential no longer has.
func checkRolesFitScopes(ctx context.Context, s logical.Storage, scopes []string) error {
	names, err := s.List(ctx, rolesStoragePrefix)
	if err != nil {
		return fmt.Errorf("listing roles: %w", err)
	}
	var broken []string
	for _, name := range names {
		r, err := getRole(ctx, s, name)
		if err != nil {
			return err
		}
		if r != nil {
			if extra := missingFrom(r.Scopes, scopes); len(extra) > 0 {
				broken = append(broken, fmt.Sprintf("%s (needs %s)", name, strings.Join(extra, ",")))
			}
		}
	}
	if len(broken) > 0 {
		return fmt.Errorf("the new scopes would leave these roles with scopes the config lacks: %s; update or delete those roles first", strings.Join(broken, "; "))
	}
	return nil
}

// missingFrom returns the items of want that have is lacks.
func missingFrom(want, have []string) []string {
	var out []string
	for _, s := range want {
		if !slices.Contains(have, s) {
			out = append(out, s)
		}
	}
	return out
}
