package adobeims

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// The rotation keys of config reads and rotate-root responses.
const (
	keyRotationPeriod           = "rotation_period"
	keyClientSecretUUID         = "client_secret_uuid"
	keyClientSecretCreatedAt    = "client_secret_created_at"
	keyPreviousClientSecretUUID = "previous_client_secret_uuid"
	keyPreviousSecretDeleted    = "previous_client_secret_deleted"
	keyLastRotation             = "last_rotation"
	keyNextRotation             = "next_rotation"
	keyLastRotationError        = "last_rotation_error"
)

func pathRotate(b *backend) []*framework.Path {
	return []*framework.Path{{
		Pattern:      "config/rotate-root",
		DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: forwarded(b.exclusively(opRotateRoot, b.pathRotateRootWrite), "rotate", "root-credentials",
				"Replace the client secret with a new one that only Vault knows.", okResponse(rotateRootFields())),
		},
		HelpSynopsis: "Rotate the client secret through the Adobe I/O Management API.",
		HelpDescription: `Creates a new client secret for the credential, mints a token with it, stores
it, then deletes the secret Vault held before, so that no person knows the
secret in use. Needs org_id and credential_id in config, and the I/O Management
API added to the credential's project in the Adobe Developer Console.

Adobe allows two secrets per credential: if there are two already, nothing is
done, as Vault deletes no secret but its own. Tokens already minted stay valid
until they expire, so cached shared tokens keep being served. A failure or a
crash at any step leaves a working secret stored and at most two at Adobe;
Vault's write-ahead log finishes an interrupted rotation within about ten
minutes. The response names the new secret's uuid, never the secret. Set
rotation_period in config to rotate on a schedule.`,
	}}
}

func (b *backend) pathRotateRootWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	if len(d.Raw) > 0 {
		return logical.ErrorResponse("config/rotate-root takes no fields; set rotation_period on config to rotate on a schedule"), nil
	}
	res, err := b.rotate(ctx, req.Storage)
	if err != nil {
		return rotationErrorResponse(err)
	}
	data := map[string]any{
		keyClientSecretUUID:         res.created.UUID,
		keyClientSecretCreatedAt:    formatTime(res.created.CreatedAt),
		keyPreviousClientSecretUUID: res.oldUUID,
		keyPreviousSecretDeleted:    res.oldGone,
		keyLastRotation:             formatTime(res.rotatedAt),
	}
	// A successful rotation cleared any back-off, so only the period counts.
	if next := nextRotation(res.config, nil, b.opts.now()); !next.IsZero() {
		data[keyNextRotation] = formatTime(next)
	}
	resp := &logical.Response{Data: data}
	for _, w := range res.warnings {
		resp.AddWarning(w)
	}
	return resp, nil
}

// rotationErrorResponse answers 400 for what the operator must fix, 502 for
// what Adobe did, 500 for Vault's own storage.
func rotationErrorResponse(err error) (*logical.Response, error) {
	var refused *rotationRefused
	switch {
	case errors.Is(err, errNotConfigured):
		return logical.ErrorResponse(errNotConfigured.Error()), nil
	case errors.As(err, &refused):
		return logical.ErrorResponse("rotating the client secret: " + err.Error()), nil
	case errors.Is(err, errNewSecretRefused):
		return nil, logical.CodedError(http.StatusBadGateway, "rotating the client secret: "+err.Error())
	}
	return imsErrorResponse("rotating the client secret", err)
}

// rotationState is what a config read shows about rotation: the standard
// fields the way the SDK's helpers format them, and since v0.1
// client_secret_uuid, last_rotation, next_rotation and last_rotation_error.
// Keys without a value are left out rather than shown empty.
func rotationState(cfg *config, st *rotationStatus, now time.Time) map[string]any {
	m := map[string]any{keyRotationDriver: rotationDriver(cfg)}
	params := automatedrotationutil.AutomatedRotationParams{
		RotationSchedule: cfg.RotationSchedule, RotationWindow: cfg.RotationWindow, RotationPeriod: cfg.RotationPeriod,
		DisableAutomatedRotation: cfg.DisableAutomatedRotation, RotationPolicy: cfg.RotationPolicy,
	}
	params.PopulateSetAutomatedRotationData(m)
	next := nextRotation(cfg, st, now)
	info := automatedrotationutil.RotationInfoResponseParams{
		LastVaultRotation: cfg.LastRotation.UTC().Truncate(time.Second),
		NextVaultRotation: next.UTC().Truncate(time.Second),
		RotationID:        cfg.RotationJobID,
	}
	info.PopulateRotationInfo(m)
	if cfg.ClientSecretUUID != "" {
		m[keyClientSecretUUID] = cfg.ClientSecretUUID
	}
	if !cfg.LastRotation.IsZero() {
		m[keyLastRotation] = formatTime(cfg.LastRotation)
	}
	if cfg.RotationPeriod > 0 {
		m[keyRotationPeriod] = int64(cfg.RotationPeriod / time.Second)
	}
	if !next.IsZero() {
		m[keyNextRotation] = formatTime(next)
	}
	if st != nil && st.Failures > 0 {
		m[keyLastRotationError] = st.LastError
	}
	return m
}
