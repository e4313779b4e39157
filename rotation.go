package adobeims

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/redact"
)

const (
	// rotationBound keeps a rotation inside Vault's 90-second request
	// timeout. Clean-up after a failed step runs even past it.
	rotationBound = 75 * time.Second
	// verifyBound is how long a new secret gets to start minting tokens:
	// Adobe does not document how soon a new secret works.
	verifyBound    = 30 * time.Second
	verifyAttempts = 6
	// maxClientSecrets is Adobe's documented limit per credential.
	maxClientSecrets = 2
)

// rotationRefused is a rotation that cannot go ahead until the operator
// changes something. It answers 400 and says what to change.
type rotationRefused struct{ msg string }

func (e *rotationRefused) Error() string { return e.msg }

func refusef(format string, args ...any) error {
	return &rotationRefused{msg: fmt.Sprintf(format, args...)}
}

// errNewSecretRefused is Adobe creating a secret and then refusing tokens for
// it: Adobe's fault, not the operator's, so it answers 502.
var errNewSecretRefused = errors.New("the new client secret Adobe created did not mint a token, so the current secret stays in use")

// managementScopesNote says why the management scopes stay out of config.
const managementScopesNote = "Vault asks for the management scopes only to rotate, so they do not belong in config scopes (every creds token would carry them)"

// managementAccessHelp is what an operator must do in the Developer Console
// when IMS refuses to mint a token with the management scopes.
func managementAccessHelp() string {
	return "rotation needs the I/O Management API added to the credential's project in the Adobe Developer Console, " +
		"which grants the credential the scopes " + strings.Join(ims.ManagementScopes(), ",") + "; " + managementScopesNote
}

// rotationResult is what a successful rotation reports.
type rotationResult struct {
	config    *config // as stored
	created   ims.Secret
	oldUUID   string
	oldGone   bool
	warnings  []string
	rotatedAt time.Time
}

// String, GoString and Format print the result with the stored config
// redacted (see connection's Format for why a pointer field needs this).
func (r rotationResult) String() string                { return fmt.Sprint(r.withoutSecrets()) }
func (r rotationResult) GoString() string              { return fmt.Sprintf("%#v", r.withoutSecrets()) }
func (r rotationResult) Format(f fmt.State, verb rune) { redact.Format(f, verb, r.withoutSecrets()) }

// redactedRotationResult is what formatting a rotationResult shows.
type redactedRotationResult struct {
	Config    *config
	Created   ims.Secret
	OldUUID   string
	OldGone   bool
	Warnings  []string
	RotatedAt time.Time
}

func (r rotationResult) withoutSecrets() redactedRotationResult {
	return redactedRotationResult{Config: r.config, Created: r.created, OldUUID: r.oldUUID, OldGone: r.oldGone, Warnings: r.warnings, RotatedAt: r.rotatedAt}
}

// rotation is one run of client-secret rotation. Its management token is
// minted with the secret Vault held when it started; tokens outlive the
// deletion of their secret at Adobe, so every step, clean-up included, can
// use it.
type rotation struct {
	b      *backend
	s      logical.Storage
	cfg    *config // as read when the rotation started
	mgmt   *ims.Management
	bearer string
	log    hclog.Logger
}

// String, GoString and Format print the rotation's credential without its
// client secret, and redact.Marker for its management token.
func (r rotation) String() string                { return fmt.Sprint(r.withoutSecrets()) }
func (r rotation) GoString() string              { return fmt.Sprintf("%#v", r.withoutSecrets()) }
func (r rotation) Format(f fmt.State, verb rune) { redact.Format(f, verb, r.withoutSecrets()) }

// redactedRotation is what formatting a rotation shows.
type redactedRotation struct {
	Config redactedConfig
	Bearer string
}

func (r rotation) withoutSecrets() redactedRotation {
	v := redactedRotation{Bearer: redact.Secret(r.bearer)}
	if r.cfg != nil {
		v.Config = r.cfg.withoutSecrets()
	}
	return v
}

// rotate replaces the client secret: create a new one, prove it mints a
// token, store it, delete the old one. The caller holds the writer lock, so
// no config write or other rotation runs meanwhile on this node; each step
// that depends on the config (storing, retiring) still reads it again, as
// another node or a person in the Developer Console may have acted.
//
// A failure at any step leaves a working secret stored and at most two at
// Adobe. A write-ahead log entry, put before the create call and naming the
// secrets that existed before it, lets Vault's rollback finish the job after
// a crash or a lost answer at any point.
func (b *backend) rotate(ctx context.Context, s logical.Storage) (*rotationResult, error) {
	ctx, cancel := context.WithTimeout(ctx, rotationBound)
	defer cancel()

	cfg, err := getConfig(ctx, s)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, errNotConfigured
	}
	if err := checkRotatable(cfg); err != nil {
		return nil, err
	}
	r := &rotation{
		b: b, s: s, cfg: cfg, log: b.logger("rotate"),
		mgmt: ims.NewManagement(cfg.IOManagementURL, cfg.ClientID, b.imsOptions()),
	}
	if r.bearer, err = b.managementToken(ctx, cfg); err != nil {
		return nil, err
	}
	r.finishEarlierRotations(ctx)

	secrets, err := r.mgmt.ListSecrets(ctx, r.bearer, cfg.OrgID, cfg.CredentialID)
	if err != nil {
		return nil, managementError("listing the credential's client secrets", err)
	}
	current, err := currentSecret(cfg, secrets)
	if err != nil {
		return nil, err
	}
	walID, err := framework.PutWAL(ctx, s, walKindRotateRoot, &rotationWAL{
		ClientID: cfg.ClientID, OrgID: cfg.OrgID, CredentialID: cfg.CredentialID,
		OldUUID: current.UUID, Existing: uuidsOf(secrets), SecretStamp: cfg.SecretStamp,
	})
	if err != nil {
		return nil, fmt.Errorf("writing the rotation's write-ahead log entry, before asking Adobe for a new secret (nothing was changed): %w", err)
	}
	created, err := r.create(ctx, secrets, walID)
	if err != nil {
		return nil, err
	}
	r.log.Info("created a new client secret", "uuid", created.UUID)

	if err := r.verify(ctx, created.ClientSecret); err != nil {
		return nil, fmt.Errorf("%w (%s): %w", errNewSecretRefused, r.discard(ctx, created.UUID, walID), err)
	}
	stored, err := r.store(ctx, created, walID)
	if err != nil {
		return nil, err
	}
	// New mints use the new secret from here on; cached shared tokens stay,
	// as Adobe keeps them valid until they expire.
	b.useConfig(cfg, stored)

	res := &rotationResult{config: stored, created: created.Secret, oldUUID: current.UUID, rotatedAt: stored.LastRotation}
	if err := r.retire(ctx, current.UUID, created.UUID, walID); err != nil {
		res.warnings = append(res.warnings, err.Error())
	} else {
		res.oldGone = true
	}
	if err := deleteRotationStatus(ctx, s); err != nil {
		r.log.Warn("could not clear the record of failed automatic rotations", "error", err)
	}
	r.log.Info("rotated the client secret", "uuid", created.UUID, "previous_uuid", current.UUID, "previous_deleted", res.oldGone)
	return res, nil
}

func uuidsOf(secrets []ims.Secret) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, s.UUID)
	}
	return out
}

// checkRotatable says what the config lacks for rotation.
func checkRotatable(cfg *config) error {
	var missing []string
	if cfg.OrgID == "" {
		missing = append(missing, keyOrgID)
	}
	if cfg.CredentialID == "" {
		missing = append(missing, keyCredentialID)
	}
	if len(missing) == 0 {
		return nil
	}
	return refusef("rotation needs %s in config: copy them from the credential's page in the Adobe Developer Console, "+
		"https://developer.adobe.com/console/projects/{org_id}/{project_id}/credentials/{credential_id}/details/oauthservertoserver",
		strings.Join(missing, " and "))
}

// managementToken mints a token for the I/O Management API with the stored
// secret. It is never cached: it is used for one rotation or clean-up.
func (b *backend) managementToken(ctx context.Context, cfg *config) (string, error) {
	tok, err := b.mint(ctx, b.newIMSClient(cfg), ims.ManagementScopes())
	if err != nil {
		var ie *ims.Error
		if errors.As(err, &ie) && ie.Code == "invalid_scope" {
			return "", fmt.Errorf("minting a token with the I/O Management API scopes: %w; %s", err, managementAccessHelp())
		}
		return "", fmt.Errorf("minting a token with the I/O Management API scopes: %w", err)
	}
	return tok.AccessToken, nil
}

// managementError wraps an I/O Management API error. When Adobe refuses the
// management token (401, 403), the error's hint already names the Developer
// Console step and the scopes; this adds why they stay out of config.
func managementError(doing string, err error) error {
	var ie *ims.Error
	if errors.As(err, &ie) && (ie.StatusCode == http.StatusUnauthorized || ie.StatusCode == http.StatusForbidden) {
		return fmt.Errorf("%s: %w; %s", doing, err, managementScopesNote)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// currentSecret finds the secret Vault holds among the credential's
// secrets, and refuses when there is no room for a new one.
func currentSecret(cfg *config, secrets []ims.Secret) (*ims.Secret, error) {
	if len(secrets) >= maxClientSecrets {
		held := "Vault cannot tell which of them it holds, as it has not rotated this secret before"
		if cfg.ClientSecretUUID != "" {
			held = "Vault holds " + cfg.ClientSecretUUID
		}
		return nil, refusef("the credential already has %d client secrets, the most Adobe allows: %s. %s, and it deletes no other secret: "+
			"delete the one nothing uses in the Adobe Developer Console (its last use tells), then rotate again",
			len(secrets), describeSecrets(secrets), held)
	}
	if cfg.ClientSecretUUID != "" {
		i := slices.IndexFunc(secrets, func(s ims.Secret) bool { return s.UUID == cfg.ClientSecretUUID })
		if i < 0 {
			return nil, refusef("the client secret Vault holds (uuid %s) is not among the credential's secrets (%s): check org_id and credential_id",
				cfg.ClientSecretUUID, describeSecrets(secrets))
		}
		return &secrets[i], nil
	}
	if len(secrets) == 0 {
		return nil, refusef("Adobe lists no client secret for credential %q, though the one Vault holds just minted a token: check org_id and credential_id", cfg.CredentialID)
	}
	// The stored secret just minted the management token and it is the
	// only one, so it is this one.
	return &secrets[0], nil
}

func describeSecrets(secrets []ims.Secret) string {
	if len(secrets) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(secrets))
	for _, s := range secrets {
		used := "never used"
		if !s.LastUsedAt.IsZero() {
			used = "last used " + s.LastUsedAt.UTC().Format(time.RFC3339)
		}
		parts = append(parts, fmt.Sprintf("%s (created %s, %s)", s.UUID, s.CreatedAt.UTC().Format(time.RFC3339), used))
	}
	return strings.Join(parts, ", ")
}

// create asks Adobe for a new secret. When Adobe certainly made none, the
// write-ahead log entry is dropped; when it may have, the secrets that were
// not there before are deleted, and the entry stays unless that settled it.
func (r *rotation) create(ctx context.Context, before []ims.Secret, walID string) (*ims.CreatedSecret, error) {
	created, err := r.mgmt.CreateSecret(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID)
	if err == nil {
		return created, nil
	}
	var ie *ims.Error
	if errors.As(err, &ie) && ie.StatusCode >= 400 && ie.StatusCode < 500 {
		r.dropWAL(ctx, walID)
		return nil, managementError("creating a new client secret", err)
	}
	// A 5xx or a lost answer may hide a secret Adobe did create. Its value
	// never reached Vault, so nobody can use it: delete it rather than let
	// it hold one of the credential's two places.
	note, settled := r.deleteUnseen(ctx, before)
	if settled {
		r.dropWAL(ctx, walID)
	}
	return nil, fmt.Errorf("creating a new client secret (%s): %w", note, err)
}

// deleteUnseen deletes the secrets that appeared since before was listed,
// just ahead of the create call, except the one the config names now: only
// this rotation's create can have made them, unless someone else rotated
// meanwhile, and then the config says which secret is theirs. It reports
// what it did and whether nothing is left to settle.
func (r *rotation) deleteUnseen(ctx context.Context, before []ims.Secret) (string, bool) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	cur, err := getConfig(ctx, r.s)
	if err != nil {
		r.log.Warn("could not read the config to learn which secret must stay", "error", err)
		return "whether Adobe created a secret anyway is unknown; Vault's write-ahead log settles it " + rollbackWithin, false
	}
	after, err := r.mgmt.ListSecrets(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID)
	if err != nil {
		r.log.Warn("could not list the client secrets to learn whether a failed create made one", "error", err)
		return "whether Adobe created a secret anyway is unknown; Vault's write-ahead log settles it " + rollbackWithin, false
	}
	existed := uuidsOf(before)
	settled := true
	var notes []string
	for _, s := range after {
		if slices.Contains(existed, s.UUID) || (cur != nil && s.UUID == cur.ClientSecretUUID) {
			continue
		}
		if err := r.mgmt.DeleteSecret(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID, s.UUID); err != nil {
			r.log.Warn("a failed create made a client secret that could not be deleted yet", "uuid", s.UUID, "error", err)
			notes = append(notes, fmt.Sprintf("Adobe created secret %s anyway, and it could not be deleted yet; Vault's write-ahead log deletes it %s", s.UUID, rollbackWithin))
			settled = false
			continue
		}
		r.log.Warn("a failed create made a client secret anyway; deleted it", "uuid", s.UUID)
		notes = append(notes, fmt.Sprintf("Adobe created secret %s anyway; it was deleted", s.UUID))
	}
	if len(notes) == 0 {
		return "Adobe created no secret", settled
	}
	return strings.Join(notes, "; "), settled
}

// verifyWaits is how long verify waits after its first failed mint, and at
// most between two: a second, doubling up to eight, unless the IMS client's
// retry tuning is set (tests shorten it), which it then follows.
func verifyWaits(o ims.Options) (first, most time.Duration) {
	if o.RetryWaitMin > 0 {
		return o.RetryWaitMin, max(o.RetryWaitMax, o.RetryWaitMin)
	}
	return time.Second, 8 * time.Second
}

// verify proves the new secret mints a token with the config's scopes,
// retrying for a while (verifyWaits): Adobe does not document how soon a new
// secret works.
func (r *rotation) verify(ctx context.Context, secret string) error {
	ctx, cancel := context.WithTimeout(ctx, verifyBound)
	defer cancel()
	client := ims.NewClient(r.cfg.IMSURL, ims.Credentials{ClientID: r.cfg.ClientID, ClientSecret: secret}, r.b.imsOptions())
	wait, maxWait := verifyWaits(r.b.opts.imsOptions)
	for attempt := 1; ; attempt++ {
		_, err := r.b.mint(ctx, client, r.cfg.Scopes)
		if err == nil {
			return nil
		}
		if attempt == verifyAttempts {
			return fmt.Errorf("minting a token with the new secret, %d attempts: %w", attempt, err)
		}
		r.log.Debug("the new client secret does not mint a token yet; retrying", "attempt", attempt, "wait", wait, "error", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("minting a token with the new secret, %d attempts before running out of time: %w", attempt, err)
		}
		wait = min(2*wait, maxWait)
	}
}

// store writes the new secret into the config, unless the config changed
// since the rotation started (another node's rotation, or a write): then the
// new secret is not needed.
func (r *rotation) store(ctx context.Context, created *ims.CreatedSecret, walID string) (*config, error) {
	cur, err := getConfig(ctx, r.s)
	if err != nil {
		return nil, fmt.Errorf("reading the config before storing the new secret (%s): %w", r.discard(ctx, created.UUID, walID), err)
	}
	if cur == nil || !sameSecret(cur, r.cfg) {
		return nil, refusef("the config's credential changed while its secret was being rotated, so the new secret was not stored (%s): rotate again if still wanted",
			r.discard(ctx, created.UUID, walID))
	}
	next := *cur
	next.ClientSecret, next.ClientSecretUUID = created.ClientSecret, created.UUID
	next.SecretStamp = newSecretStamp()
	next.LastRotation = r.b.opts.now().UTC()
	if err := putConfig(ctx, r.s, &next); err != nil {
		// A write that reports an error may still have landed (a storage
		// timeout after the commit): look before deleting either secret.
		back, rerr := getConfig(ctx, r.s)
		switch {
		case rerr != nil:
			return nil, fmt.Errorf("storing the new secret: %w; whether it was stored is unknown, so both secrets stay at Adobe until Vault's write-ahead log settles it %s", err, rollbackWithin)
		case back != nil && back.ClientSecretUUID == created.UUID:
			r.log.Warn("storing the new secret reported an error, but the secret was stored", "error", err)
			return back, nil
		}
		return nil, fmt.Errorf("storing the new secret (%s): %w", r.discard(ctx, created.UUID, walID), err)
	}
	return &next, nil
}

// sameSecret says whether two configs hold the same secret of the same
// credential.
func sameSecret(a, b *config) bool {
	return a.ClientID == b.ClientID && a.OrgID == b.OrgID && a.CredentialID == b.CredentialID &&
		a.ClientSecret == b.ClientSecret && a.SecretStamp == b.SecretStamp
}

// retire deletes the secret the rotation replaced, once the config is seen
// to hold the new one. Tokens minted with the old secret stay valid at Adobe
// until they expire, which is why cached shared tokens are kept. It runs
// even if the request was cancelled: the new secret is stored, and finishing
// the job beats leaving it to the write-ahead log.
func (r *rotation) retire(ctx context.Context, oldUUID, newUUID, walID string) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	cur, err := getConfig(ctx, r.s)
	switch {
	case err != nil:
		return fmt.Errorf("the new secret is stored, but reading the config again before deleting the previous secret %s failed: %v; "+
			"Vault's write-ahead log deletes it %s", oldUUID, err, rollbackWithin)
	case cur == nil || cur.ClientSecretUUID != newUUID:
		r.log.Warn("the config no longer holds the new client secret, so the previous one is kept", "previous_uuid", oldUUID, "uuid", newUUID)
		return fmt.Errorf("the new secret %s was stored, but the config changed since and no longer holds it, so the previous secret %s was not deleted; "+
			"Vault's write-ahead log settles it %s", newUUID, oldUUID, rollbackWithin)
	}
	if err := r.mgmt.DeleteSecret(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID, oldUUID); err != nil {
		r.log.Warn("the new client secret is stored, but the previous one could not be deleted yet", "previous_uuid", oldUUID, "error", err)
		return fmt.Errorf("the new secret is stored and in use, but deleting the previous secret %s failed: %v; "+
			"Vault's write-ahead log retries %s, and so does the next rotation", oldUUID, err, rollbackWithin)
	}
	r.dropWAL(ctx, walID)
	return nil
}

// discard deletes a new secret that was never stored, and so is known to
// nobody, together with the write-ahead log entry that would delete it
// later. It says what happened, for the error the operator reads.
func (r *rotation) discard(ctx context.Context, newUUID, walID string) string {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	if err := r.mgmt.DeleteSecret(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID, newUUID); err != nil {
		r.log.Warn("could not delete the unused new client secret", "uuid", newUUID, "error", err)
		return fmt.Sprintf("the unused new secret %s could not be deleted yet; Vault's write-ahead log deletes it %s", newUUID, rollbackWithin)
	}
	r.dropWAL(ctx, walID)
	return fmt.Sprintf("the unused new secret %s was deleted", newUUID)
}

// dropWAL removes the rotation's write-ahead log entry once nothing is left
// for a rollback to do.
func (r *rotation) dropWAL(ctx context.Context, walID string) {
	if err := framework.DeleteWAL(ctx, r.s, walID); err != nil {
		// Harmless: rolling the entry back finds nothing to delete.
		r.log.Warn("could not remove the rotation's write-ahead log entry", "error", err)
	}
}

// cleanupContext outlives the request's cancellation: undoing a half-done
// rotation matters more than answering on time.
func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), imsCallBound)
}
