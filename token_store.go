package adobeims

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

// tokensStoragePrefix holds the shared tokens the active node minted,
// seal-wrapped, one entry per scope set, so that a restarted node, a
// reloaded or upgraded plugin and a new leader reuse them instead of asking
// IMS again: Adobe throttles integrations that mint too many tokens.
const tokensStoragePrefix = "tokens/"

// persistedToken is a stored shared token. It names the client and IMS it
// was minted for, and one for another is never used, should a config change
// race a save.
type persistedToken struct {
	AccessToken string    `json:"access_token"`
	TokenType   string    `json:"token_type"`
	Scopes      []string  `json:"scopes"`
	MintedAt    time.Time `json:"minted_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	ClientID    string    `json:"client_id"`
	IMSURL      string    `json:"ims_url"`
}

// String, GoString and Format print the stored token with its value replaced
// by redact.Marker; JSON, and so storage, still holds it.
func (p persistedToken) String() string                { return fmt.Sprint(p.withoutSecrets()) }
func (p persistedToken) GoString() string              { return fmt.Sprintf("%#v", p.withoutSecrets()) }
func (p persistedToken) Format(f fmt.State, verb rune) { redact.Format(f, verb, p.withoutSecrets()) }

// redactedPersistedToken is a persistedToken without its methods, to be formatted.
type redactedPersistedToken persistedToken

func (p persistedToken) withoutSecrets() redactedPersistedToken {
	v := redactedPersistedToken(p)
	v.AccessToken = redact.Secret(p.AccessToken)
	return v
}

// tokenStore is the token cache's Store over the mount's storage. It loads
// on every node and saves only where storage may be written.
type tokenStore struct{ b *backend }

func tokenStorageKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return tokensStoragePrefix + hex.EncodeToString(sum[:16])
}

// current is the config tokens are minted with now, or nil when tokens are
// not to be persisted.
func (s tokenStore) current() *config {
	s.b.mu.RLock()
	c := s.b.conn
	s.b.mu.RUnlock()
	if c == nil || !c.config.persistTokens() || s.b.storage == nil {
		return nil
	}
	return c.config
}

func (s tokenStore) Load(ctx context.Context, key string) (*tokencache.Token, error) {
	cfg := s.current()
	if cfg == nil {
		return nil, nil
	}
	p, err := getJSON[persistedToken](ctx, s.b.storage, tokenStorageKey(key), "shared token")
	if err != nil || p == nil {
		return nil, err
	}
	if p.ClientID != cfg.ClientID || p.IMSURL != cfg.IMSURL || tokencache.Key(p.Scopes) != key {
		return nil, nil
	}
	return &tokencache.Token{AccessToken: p.AccessToken, TokenType: p.TokenType, Scopes: p.Scopes, MintedAt: p.MintedAt, ExpiresAt: p.ExpiresAt}, nil
}

func (s tokenStore) Save(ctx context.Context, key string, tok *tokencache.Token) error {
	cfg := s.current()
	if cfg == nil || !s.b.mayWriteStorage() {
		return nil
	}
	entry, err := logical.StorageEntryJSON(tokenStorageKey(key), &persistedToken{
		AccessToken: tok.AccessToken, TokenType: tok.TokenType, Scopes: tok.Scopes,
		MintedAt: tok.MintedAt, ExpiresAt: tok.ExpiresAt, ClientID: cfg.ClientID, IMSURL: cfg.IMSURL,
	})
	if err != nil {
		return fmt.Errorf("encoding a shared token: %w", err)
	}
	if err := s.b.storage.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing a shared token: %w", err)
	}
	return nil
}

// mayWriteStorage is false on performance standbys and secondaries, whose
// writes Vault refuses.
func (b *backend) mayWriteStorage() bool {
	return b.WriteSafeReplicationState() && !b.isPerformanceStandby()
}

func (b *backend) isPerformanceStandby() bool {
	return b.System().ReplicationState().HasState(consts.ReplicationPerformanceStandby | consts.ReplicationPerformanceSecondary)
}

// dropPersistedTokens deletes every stored shared token, as the cache is
// dropped when the credential changes or persist_tokens is turned off.
func dropPersistedTokens(ctx context.Context, s logical.Storage) error {
	keys, err := s.List(ctx, tokensStoragePrefix)
	if err != nil {
		return fmt.Errorf("listing stored shared tokens: %w", err)
	}
	var errs []error
	for _, k := range keys {
		if err := s.Delete(ctx, tokensStoragePrefix+k); err != nil {
			errs = append(errs, fmt.Errorf("deleting a stored shared token: %w", err))
		}
	}
	return errors.Join(errs...)
}
