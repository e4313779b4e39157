package adobeims

import (
	"context"
	"errors"
	"fmt"
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
// once Adobe created the new secret and before Vault stores it.
const walKindRotateRoot = "rotate-root"

// rotationWAL is that entry. It names secrets by uuid only: the secret
// itself must not sit in storage outside the seal-wrapped config.
type rotationWAL struct {
	ClientID     string `json:"client_id" mapstructure:"client_id"`
	OrgID        string `json:"org_id" mapstructure:"org_id"`
	CredentialID string `json:"credential_id" mapstructure:"credential_id"`
	NewUUID      string `json:"new_uuid" mapstructure:"new_uuid"`
	OldUUID      string `json:"old_uuid" mapstructure:"old_uuid"`
}

// sameCredential reports whether the entry's secrets belong to the
// credential cfg holds; after a config change they may not.
func (w *rotationWAL) sameCredential(cfg *config) bool {
	return cfg != nil && cfg.ClientID == w.ClientID && cfg.OrgID == w.OrgID && cfg.CredentialID == w.CredentialID
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
	return b.rollbackRotation(ctx, req.Storage, &w)
}

// rollbackRotation finishes a rotation that stopped between creating the new
// secret and deleting the old one, going by what the config holds now: if
// the new secret was stored the old one is retired, otherwise the new one,
// which nobody knows. It never deletes the secret the config holds. A nil
// return lets Vault drop the entry; an error keeps it for the next try.
func (b *backend) rollbackRotation(ctx context.Context, s logical.Storage, w *rotationWAL) error {
	log := b.logger("rotate")
	cfg, err := getConfig(ctx, s)
	if err != nil {
		return err
	}
	leftover := w.NewUUID
	if cfg != nil && cfg.ClientSecretUUID == w.NewUUID {
		leftover = w.OldUUID
	}
	switch {
	case !w.sameCredential(cfg):
		log.Error("an interrupted rotation left a client secret at Adobe that Vault can no longer delete, because the config changed since: delete it in the Adobe Developer Console if it is unused",
			"client_id", w.ClientID, "credential_id", w.CredentialID, "new_uuid", w.NewUUID, "previous_uuid", w.OldUUID)
		return nil
	case leftover == "" || leftover == cfg.ClientSecretUUID:
		return nil
	}

	bearer, err := b.managementToken(ctx, cfg)
	if err == nil {
		err = ims.NewManagement(cfg.IOManagementURL, cfg.ClientID, b.imsOptions()).DeleteSecret(ctx, bearer, cfg.OrgID, cfg.CredentialID, leftover)
	}
	var ie *ims.Error
	switch {
	case err == nil:
		log.Info("finished an interrupted rotation: deleted the client secret Vault does not use", "uuid", leftover)
		return nil
	case errors.As(err, &ie) && !ie.Retryable():
		// Adobe refuses, and will go on refusing every minute: say so once.
		log.Error("could not finish an interrupted rotation: delete the client secret in the Adobe Developer Console if it is unused", "uuid", leftover, "error", err)
		return nil
	}
	return fmt.Errorf("deleting client secret %s left by an interrupted rotation: %w", leftover, err)
}

// finishEarlierRotations deletes secrets that earlier rotations stored a
// replacement for but could not delete, so they do not hold one of the
// credential's two places until Vault's rollback gets to them. Entries whose
// new secret is not the stored one are left to the rollback: they may belong
// to a rotation still running.
func (r *rotation) finishEarlierRotations(ctx context.Context) {
	if r.cfg.ClientSecretUUID == "" {
		return
	}
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
		if err := mapstructure.Decode(entry.Data, &w); err != nil || w.NewUUID != r.cfg.ClientSecretUUID || !w.sameCredential(r.cfg) {
			continue
		}
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
