// Package adobeims is a HashiCorp Vault secrets engine that holds an Adobe
// Developer Console OAuth Server-to-Server credential and hands out Adobe IMS
// access tokens as Vault leases.
package adobeims

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

// PluginName is the plugin's catalog and binary name.
const PluginName = "vault-plugin-secrets-adobe-ims"

// Version is the plugin's version, set at build time with
// -ldflags "-X github.com/ims-vault/vault-plugin-secrets-adobe-ims.Version=v1.2.3".
// Vault requires a registered version to match it exactly.
var Version = "v0.0.0-dev"

const backendHelp = `
The Adobe IMS secrets engine holds an Adobe Developer Console OAuth
Server-to-Server credential and hands out Adobe IMS access tokens as leases.

Write the credential to "config", optionally define roles under "roles/",
then read "creds" or "creds/<role>" for a token. Applications never see the
client secret.
`

// Factory returns a configured instance of the backend.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(backendOptions{})
	if err := b.setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func (b *backend) setup(ctx context.Context, conf *logical.BackendConfig) error {
	if err := b.Setup(ctx, conf); err != nil {
		return fmt.Errorf("setting up the adobe ims backend: %w", err)
	}
	b.storage = conf.StorageView
	return nil
}

// backendOptions are the seams tests use; the zero value is production.
type backendOptions struct {
	now        func() time.Time
	httpClient *http.Client
	imsOptions ims.Options // retry tuning; HTTPClient, Logger and OnAttempt are set by the backend
	// onWriterWait is told when an operation that changes the credential
	// waits for another to finish, so tests can interleave them exactly.
	onWriterWait func(op string)
}

type backend struct {
	*framework.Backend
	opts backendOptions

	cache   *tokencache.Cache
	metrics *metrics

	// writer is held by each operation that changes the credential: config
	// writes and deletes, role writes, rotations and their rollback.
	writer *writerLock

	// gate caps the token requests in flight to IMS and remembers when IMS
	// throttles the credential; every IMS client of the mount shares it.
	gate *imsgate.Gate

	// mu guards conn, which is built from the stored config on first use and
	// dropped whenever the config changes.
	mu   sync.RWMutex
	conn *connection

	// storage is the mount's storage, for Invalidate, which gets none.
	storage logical.Storage

	// roles caches decoded roles for the read path (name -> *role): a
	// storage read per creds request costs a fifth of a read's throughput.
	// Writes, deletes and Invalidate drop entries and bump rolesGen.
	roles    sync.Map
	rolesGen atomic.Uint64
}

// connection is the stored config and the IMS client made from it.
type connection struct {
	config *config
	client *ims.Client
	// refused says why this config hands out no token (it names scopes no
	// creds token may carry: a config stored before they were refused),
	// worked out once here rather than on every read.
	refused error
}

// String, GoString and Format print the config and the client without the
// client secret. They are needed although both redact themselves: for a verb
// such as %s, fmt prints what an unexported pointer field points to field by
// field, without calling its methods.
func (c connection) String() string                { return fmt.Sprint(c.withoutSecrets()) }
func (c connection) GoString() string              { return fmt.Sprintf("%#v", c.withoutSecrets()) }
func (c connection) Format(f fmt.State, verb rune) { redact.Format(f, verb, c.withoutSecrets()) }

// redactedConnection is what formatting a connection shows. Its fields are
// exported, so that fmt calls their own formatting methods.
type redactedConnection struct {
	Config  *config
	Client  *ims.Client
	Refused error
}

func (c connection) withoutSecrets() redactedConnection {
	return redactedConnection{Config: c.config, Client: c.client, Refused: c.refused}
}

// connectLocked makes cfg the config tokens are minted with. The caller
// holds b.mu.
func (b *backend) connectLocked(cfg *config) *connection {
	b.gate.SetLimit(cfg.maxConcurrentIMSRequests())
	b.conn = &connection{config: cfg, client: b.newIMSClient(cfg), refused: refuseSecretScopes(cfg.Scopes)}
	return b.conn
}

func newBackend(opts backendOptions) *backend {
	if opts.now == nil {
		opts.now = time.Now
	}
	b := &backend{
		opts: opts, metrics: &metrics{}, writer: newWriterLock(opts.onWriterWait),
	}
	b.gate = imsgate.New(imsgate.Options{Now: opts.now, OnThrottle: b.saveThrottle})
	b.cache = tokencache.New(b.mintShared, tokencache.Options{
		Now:         opts.now,
		Store:       tokenStore{b},
		MintTimeout: imsCallBound,
		OnBackgroundError: func(scopes string, err error) {
			if errors.Is(err, logical.ErrReadOnly) {
				// A performance standby waits for the active node's replacement.
				return
			}
			b.logger("refresh").Warn("background refresh of a shared token failed; the current token is served until its safe end",
				"scopes", scopes, "error", err)
		},
		OnStoreError: func(scopes string, err error) {
			b.logger("refresh").Warn("could not load or save a persisted shared token; IMS is asked instead", "scopes", scopes, "error", err)
		},
	})
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configStorageKey, tokensStoragePrefix},
			// A rotation's write-ahead log belongs to the cluster that ran
			// it: a performance secondary must never roll back (and so
			// delete secrets of) the primary's rotation.
			LocalStorage: []string{framework.WALPrefix},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{pathConfig(b)},
			pathRoles(b),
			pathCreds(b),
			pathRotate(b),
			pathInfo(b),
		),
		Secrets:           []*framework.Secret{secretToken(b)},
		Invalidate:        b.invalidate,
		Clean:             b.clean,
		PeriodicFunc:      b.periodic,
		WALRollback:       b.walRollback,
		RotateCredential:  b.rotateCredential,
		WALRollbackMinAge: walRollbackMinAge,
		RunningVersion:    Version,
	}
	return b
}

// imsCallBound bounds one IMS call, retries included, well inside Vault's
// 90-second request timeout.
const imsCallBound = 30 * time.Second

func (b *backend) invalidate(ctx context.Context, key string) {
	switch {
	case key == configStorageKey:
		b.reloadConfig(ctx)
	case key == throttleStorageKey:
		// The active node met a throttle: respect it here too, should this
		// node become the active one.
		b.mu.RLock()
		c := b.conn
		b.mu.RUnlock()
		if c != nil {
			b.restoreThrottle(ctx, b.storage, c.config)
		}
	case strings.HasPrefix(key, rolesStoragePrefix):
		// Another node changed a role: the token of its old scope set is
		// unknown here, so drop them all; they are re-minted on demand.
		b.forgetRole(strings.TrimPrefix(key, rolesStoragePrefix))
		b.cache.Purge()
	}
}

// periodic runs about once a minute on every node. Refreshing shared tokens
// touches no storage, so every node keeps its own cache warm; rotation writes
// storage and runs only where that is allowed.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	var errs []error
	if err := b.refreshSharedTokens(ctx, req.Storage); err != nil {
		errs = append(errs, err)
	}
	if b.WriteSafeReplicationState() {
		if err := b.rotateIfDue(ctx, req.Storage); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (b *backend) clean(context.Context) {
	b.cache.Close()
}

// reloadConfig follows a config change made on another node, the same way
// the node that made it does (useConfig).
func (b *backend) reloadConfig(ctx context.Context) {
	cfg, err := getConfig(ctx, b.storage)
	if err != nil {
		b.logger("config").Warn("could not read the changed config; it is read again on the next request", "error", err)
		b.resetClient()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var old *config
	if b.conn != nil {
		old = b.conn.config
	}
	b.useConfigLocked(old, cfg)
}

// useConfig points the node at cfg, the config as stored now (nil once
// deleted), which replaced old (nil if unknown), and returns the cache
// generation that tokens minted with cfg belong to.
//
// A change that keeps the client, the scopes and the IMS URL (a new secret,
// by rotation or by a write, or rotation settings) keeps the cached tokens:
// tokens minted with the old secret stay valid at IMS until they expire, and
// minting again would only spend IMS calls. Any other change drops them.
// Every node does the same, whichever node made the change.
func (b *backend) useConfig(old, cfg *config) uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.useConfigLocked(old, cfg)
}

func (b *backend) useConfigLocked(old, cfg *config) uint64 {
	if cfg == nil || old == nil || !sameCredential(old, cfg) {
		b.cache.Purge()
	}
	// IMS throttles a client at a host; another one starts afresh.
	if cfg == nil || old == nil || old.ClientID != cfg.ClientID || old.IMSURL != cfg.IMSURL {
		b.gate.Reset()
	}
	b.conn = nil
	if cfg != nil {
		b.connectLocked(cfg)
	}
	return b.cache.Generation()
}

// sameCredential says whether two configs mint the same tokens: the same
// client, scopes and IMS, whatever the secret.
func sameCredential(a, b *config) bool {
	return a.ClientID == b.ClientID && a.IMSURL == b.IMSURL && slices.Equal(a.Scopes, b.Scopes)
}

// resetClient forgets the IMS client and every cached token; the config is
// read again on the next request.
func (b *backend) resetClient() {
	b.mu.Lock()
	b.conn = nil
	b.cache.Purge()
	b.mu.Unlock()
}

// connection returns the stored config and its IMS client, or nil when the
// engine is not configured.
func (b *backend) connection(ctx context.Context, s logical.Storage) (*connection, error) {
	b.mu.RLock()
	c := b.conn
	b.mu.RUnlock()
	if c != nil {
		return c, nil
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conn != nil {
		return b.conn, nil
	}
	cfg, err := getConfig(ctx, s)
	if err != nil || cfg == nil {
		return nil, err
	}
	c = b.connectLocked(cfg)
	b.restoreThrottle(ctx, s, cfg)
	return c, nil
}

func (b *backend) newIMSClient(cfg *config) *ims.Client {
	return ims.NewClient(cfg.IMSURL, ims.Credentials{ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret}, b.imsOptions())
}

func (b *backend) imsOptions() ims.Options {
	o := b.opts.imsOptions
	o.HTTPClient = b.opts.httpClient
	o.Logger = b.logger("ims")
	o.OnAttempt = b.metrics.observeAttempt
	o.Gate = b.gate
	if o.MaxElapsed == 0 {
		o.MaxElapsed = imsCallBound
	}
	return o
}

func (b *backend) logger(name string) hclog.Logger {
	if l := b.Logger(); l != nil {
		return l.Named(name)
	}
	return hclog.NewNullLogger()
}

// mintShared is the cache's way to IMS. The client was loaded by the reader
// that asked the cache; if the config changed since, the mint fails rather
// than use a credential that no longer applies.
func (b *backend) mintShared(ctx context.Context, scopes []string) (*tokencache.Token, error) {
	b.mu.RLock()
	c := b.conn
	b.mu.RUnlock()
	if c == nil {
		return nil, errNotConfigured
	}
	// A performance standby found no servable token in memory or storage:
	// the active node mints it, once for the cluster, and stores it.
	if b.isPerformanceStandby() {
		return nil, logical.ErrReadOnly
	}
	return b.mint(ctx, c.client, scopes)
}

func (b *backend) mint(ctx context.Context, c *ims.Client, scopes []string) (*tokencache.Token, error) {
	// The expiry is counted from before the request, so it is never later
	// than the one IMS has.
	start := b.opts.now()
	t, err := c.Token(ctx, scopes)
	b.metrics.imsTokenRequests.Add(1)
	if err != nil {
		b.metrics.imsTokenFailures.Add(1)
		return nil, err
	}
	return &tokencache.Token{
		AccessToken: t.AccessToken,
		TokenType:   t.TokenType,
		Scopes:      scopes,
		MintedAt:    start,
		ExpiresAt:   start.Add(t.ExpiresIn),
	}, nil
}
