package adobeims

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/mitchellh/mapstructure"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// walRollbackMinAge is how old a rotation's write-ahead log entry must be
// before Vault rolls it back: longer than any rotation takes.
const walRollbackMinAge = 10 * time.Minute

// rollbackWithin says, in error messages, when Vault's rollback picks up a
// write-ahead log entry: it runs every minute on entries walRollbackMinAge old.
var rollbackWithin = fmt.Sprintf("within about %d minutes", int((walRollbackMinAge+time.Minute)/time.Minute))

// walKindRotateRoot is the kind of the write-ahead log entry a rotation puts
// just before it asks Adobe for a new secret.
const walKindRotateRoot = "rotate-root"

// rotationWAL is that entry. It names secrets by uuid only: the secret
// itself must not sit in storage outside the seal-wrapped config. The new
// secret's uuid is unknown when it is written; the list of the secrets that
// existed before the create call is what tells the new one apart.
type rotationWAL struct {
	ClientID     string `json:"client_id" mapstructure:"client_id"`
	OrgID        string `json:"org_id" mapstructure:"org_id"`
	CredentialID string `json:"credential_id" mapstructure:"credential_id"`
	OldUUID      string `json:"old_uuid" mapstructure:"old_uuid"`
	// Existing lists the credential's secrets just before the create call.
	Existing []string `json:"existing" mapstructure:"existing"`
	// SecretStamp is the config's SecretStamp when the rotation started.
	SecretStamp string `json:"secret_stamp" mapstructure:"secret_stamp"`
	// NewUUID is set only by entries of v0.1, which were put after the
	// create call had answered.
	NewUUID string `json:"new_uuid,omitempty" mapstructure:"new_uuid"`
}

// sameCredential reports whether the entry's secrets belong to the
// credential cfg holds; after a config change they may not.
func (w *rotationWAL) sameCredential(cfg *config) bool {
	return cfg != nil && cfg.ClientID == w.ClientID && cfg.OrgID == w.OrgID && cfg.CredentialID == w.CredentialID
}

// leftovers says which of the credential's secrets (by uuid) the rotation
// left behind for cfg, the config as stored now, and so may be deleted. It
// never names the secret the config holds. ok is false when the config's
// secret changed in a way the entry cannot account for (a person wrote
// another secret since), and then nothing may be deleted.
func (w *rotationWAL) leftovers(cfg *config, atAdobe []string) (uuids []string, ok bool) {
	stored := cfg.ClientSecretUUID
	var left func(uuid string) bool
	switch {
	case len(w.Existing) == 0: // an entry of v0.1
		left = func(u string) bool {
			if stored == w.NewUUID {
				return u == w.OldUUID
			}
			return u == w.NewUUID
		}
	case cfg.SecretStamp == w.SecretStamp:
		// The rotation stored nothing: whatever appeared since it listed
		// the secrets is its new one, whose value nobody has.
		left = func(u string) bool { return !slices.Contains(w.Existing, u) }
	case stored != "" && !slices.Contains(w.Existing, stored):
		// A rotation stored a secret that did not exist when this one
		// started: the secret this one replaced is no longer needed.
		left = func(u string) bool { return u == w.OldUUID }
	default:
		return nil, false
	}
	for _, u := range atAdobe {
		if u != stored && left(u) {
			uuids = append(uuids, u)
		}
	}
	return uuids, true
}

// walRollback is Vault's call to undo what a crashed or failed request left
// behind, once its entry is walRollbackMinAge old. WAL data comes back from
// JSON as a map, hence mapstructure.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	if kind != walKindRotateRoot {
		b.logger("rotate").Warn("dropping a write-ahead log entry of an unknown kind", "kind", kind)
		return nil
	}
	// Vault ignores read-only errors from rollbacks, and only the node that
	// may write should touch the credential at Adobe.
	if !b.WriteSafeReplicationState() {
		return logical.ErrReadOnly
	}
	var w rotationWAL
	if err := mapstructure.Decode(data, &w); err != nil {
		b.logger("rotate").Error("dropping an unreadable rotate-root write-ahead log entry: check the credential's secrets in the Adobe Developer Console", "error", err)
		return nil
	}
	unlock, err := b.writer.lock(ctx, opRollback)
	if err != nil {
		return err
	}
	defer unlock()
	return b.rollbackRotation(ctx, req.Storage, &w)
}

// rollbackRotation finishes a rotation that stopped anywhere between its
// write-ahead log entry and deleting the old secret, going by what the
// config holds now: if the new secret was stored the old one is retired,
// otherwise any secret that appeared since the entry was put, which nobody
// knows. It never deletes the secret the config holds. A nil return lets
// Vault drop the entry; an error keeps it for the next try.
func (b *backend) rollbackRotation(ctx context.Context, s logical.Storage, w *rotationWAL) error {
	log := b.logger("rotate")
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return err
	}
	if !w.sameCredential(cfg) {
		log.Error("an interrupted rotation may have left a client secret at Adobe that Vault can no longer delete, because the config changed since: check the credential's secrets in the Adobe Developer Console",
			"client_id", w.ClientID, "credential_id", w.CredentialID, "secrets_before", strings.Join(w.Existing, ","), "previous_uuid", w.OldUUID)
		return nil
	}
	bearer, err := b.managementToken(ctx, cfg)
	if err != nil {
		return b.rollbackFailed(w, err)
	}
	mgmt := ims.NewManagement(cfg.IOManagementURL, cfg.ClientID, b.imsOptions())
	secrets, err := mgmt.ListSecrets(ctx, bearer, cfg.OrgID, cfg.CredentialID)
	if err != nil {
		return b.rollbackFailed(w, err)
	}
	leftovers, ok := w.leftovers(cfg, uuidsOf(secrets))
	if !ok {
		log.Error("an interrupted rotation may have left a client secret at Adobe, but the config's secret was changed since, so Vault deletes none: check the credential's secrets in the Adobe Developer Console",
			"secrets_before", strings.Join(w.Existing, ","), "secrets_now", strings.Join(uuidsOf(secrets), ","))
		return nil
	}
	var errs []error
	for _, u := range leftovers {
		if err := mgmt.DeleteSecret(ctx, bearer, cfg.OrgID, cfg.CredentialID, u); err != nil {
			errs = append(errs, fmt.Errorf("deleting client secret %s: %w", u, err))
			continue
		}
		log.Info("finished an interrupted rotation: deleted a client secret Vault does not use", "uuid", u)
	}
	if err := errors.Join(errs...); err != nil {
		return b.rollbackFailed(w, err)
	}
	return nil
}

// rollbackFailed keeps the entry for Vault's next try when trying again may
// help, and otherwise says once what the operator must do.
func (b *backend) rollbackFailed(w *rotationWAL, err error) error {
	var ie *ims.Error
	if errors.As(err, &ie) && !ie.Retryable() {
		// Adobe refuses, and would go on refusing every minute: say so once.
		b.logger("rotate").Error("could not finish an interrupted rotation: delete any client secret nothing uses in the Adobe Developer Console",
			"secrets_before", strings.Join(w.Existing, ","), "previous_uuid", w.OldUUID, "error", err)
		return nil
	}
	return fmt.Errorf("finishing an interrupted rotation of the client secret: %w", err)
}

// finishEarlierRotations deletes secrets that earlier rotations stored a
// replacement for but could not delete, so they do not hold one of the
// credential's two places until Vault's rollback gets to them. Entries whose
// new secret was not stored are left to the rollback, which waits until
// they are old enough not to belong to a rotation still running elsewhere.
func (r *rotation) finishEarlierRotations(ctx context.Context) {
	ids, err := framework.ListWAL(ctx, r.s)
	if err != nil {
		r.log.Warn("could not list write-ahead log entries of earlier rotations", "error", err)
		return
	}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, r.s, id)
		if err != nil || entry == nil || entry.Kind != walKindRotateRoot {
			continue
		}
		var w rotationWAL
		if err := mapstructure.Decode(entry.Data, &w); err != nil || !w.sameCredential(r.cfg) || !w.replacedBy(r.cfg) {
			continue
		}
		if w.OldUUID == r.cfg.ClientSecretUUID {
			continue
		}
		// DeleteSecret takes Adobe's 404 (someone deleted it already) as done.
		if err := r.mgmt.DeleteSecret(ctx, r.bearer, r.cfg.OrgID, r.cfg.CredentialID, w.OldUUID); err != nil {
			r.log.Warn("could not delete the secret an earlier rotation replaced", "uuid", w.OldUUID, "error", err)
			continue
		}
		r.log.Info("deleted the secret an earlier rotation replaced", "uuid", w.OldUUID)
		if err := framework.DeleteWAL(ctx, r.s, id); err != nil {
			r.log.Warn("could not remove an earlier rotation's write-ahead log entry", "error", err)
		}
	}
}

// replacedBy says whether the rotation of the entry stored its new secret in
// cfg, so that the secret it replaced is no longer needed.
func (w *rotationWAL) replacedBy(cfg *config) bool {
	if len(w.Existing) == 0 {
		return w.NewUUID != "" && cfg.ClientSecretUUID == w.NewUUID
	}
	return cfg.SecretStamp != w.SecretStamp && cfg.ClientSecretUUID != "" && !slices.Contains(w.Existing, cfg.ClientSecretUUID)
}
