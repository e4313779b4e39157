package adobeims

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	// minRotationPeriod lets tests rotate every few seconds; Vault checks
	// the schedule about once a minute anyway.
	minRotationPeriod = 10 * time.Second
	// advisedMinRotationPeriod is where a shorter period earns a warning:
	// each rotation mints two tokens and changes the credential at Adobe.
	advisedMinRotationPeriod = time.Hour
)

const descRotationPeriod = `Rotate the client secret on this schedule, e.g. "30d" or "720h", through the Adobe I/O Management API (needs org_id and credential_id). 0 (default) turns it off. At least 10s; under 1h earns a warning, as each rotation mints two tokens and changes the credential at Adobe. Vault checks the schedule about once a minute. The first rotation is due one period after the schedule is turned on.`

// rotationStatusStorageKey holds failures of automatic rotation, apart from
// the config so that recording them does not make other nodes drop their
// cached tokens.
const rotationStatusStorageKey = "rotation-status"

// rotationStatus lets automatic rotation back off after a failure instead of
// minting a management token every minute, which Adobe may throttle.
type rotationStatus struct {
	Failures    int       `json:"failures"`
	LastFailure time.Time `json:"last_failure"`
	LastError   string    `json:"last_error"` // never holds a secret: IMS errors are scrubbed
}

// rotateIfDue rotates the secret when rotation_period says so. PeriodicFunc
// calls it about once a minute on the node that may write storage. This is
// Vault Community Edition's way: Enterprise's rotation manager is not used.
func (b *backend) rotateIfDue(ctx context.Context, s logical.Storage) error {
	unlock, err := b.writer.lock(ctx, opRotateSchedule)
	if err != nil {
		return err
	}
	defer unlock()
	cfg, err := getConfig(ctx, s)
	if err != nil || cfg == nil || cfg.RotationPeriod <= 0 {
		return err
	}
	st, err := getRotationStatus(ctx, s)
	if err != nil {
		return err
	}
	now := b.opts.now()
	if now.Before(nextRotation(cfg, st)) {
		return nil
	}
	if _, err := b.rotate(ctx, s); err != nil {
		st.Failures++
		st.LastFailure = now.UTC()
		st.LastError = err.Error()
		if perr := putRotationStatus(ctx, s, st); perr != nil {
			err = errors.Join(err, perr)
		}
		b.logger("rotate").Error("automatic rotation of the client secret failed; the current secret stays in use",
			"error", err, "failures", st.Failures, "next_attempt", formatTime(nextRotation(cfg, st)))
		return fmt.Errorf("automatic rotation of the client secret: %w", err)
	}
	return nil
}

// nextRotation is when rotateIfDue rotates next: a period after the last
// rotation, or after the schedule was turned on if that is later, and not
// before a failed attempt's back-off ends. Zero when rotation is off.
func nextRotation(cfg *config, st *rotationStatus) time.Time {
	if cfg.RotationPeriod <= 0 {
		return time.Time{}
	}
	base := cfg.LastRotation
	if cfg.RotationEnabledAt.After(base) {
		base = cfg.RotationEnabledAt
	}
	next := base.Add(cfg.RotationPeriod)
	if st != nil && st.Failures > 0 {
		if retry := st.LastFailure.Add(retryDelay(st.Failures, cfg.RotationPeriod)); retry.After(next) {
			next = retry
		}
	}
	return next
}

// retryDelay doubles from a minute to an hour, and is never longer than the
// period itself.
func retryDelay(failures int, period time.Duration) time.Duration {
	return min(time.Minute<<min(max(failures-1, 0), 6), time.Hour, period)
}

// scheduleRotation starts the schedule when rotation_period is turned on, so
// that the first rotation is due one period later rather than at once.
func scheduleRotation(cfg, old *config, now time.Time) {
	switch {
	case cfg.RotationPeriod <= 0:
		cfg.RotationEnabledAt = time.Time{}
	case old == nil || old.RotationPeriod <= 0:
		cfg.RotationEnabledAt = now.UTC()
	}
}

func validateRotationPeriod(p time.Duration) error {
	switch {
	case p < 0:
		return fmt.Errorf("rotation_period %s is negative: give a duration such as \"30d\", or 0 to turn automatic rotation off", p)
	case p > 0 && p < minRotationPeriod:
		return fmt.Errorf("rotation_period %s is shorter than the minimum of %s; 0 turns automatic rotation off", p, minRotationPeriod)
	}
	return nil
}

func getRotationStatus(ctx context.Context, s logical.Storage) (*rotationStatus, error) {
	entry, err := s.Get(ctx, rotationStatusStorageKey)
	if err != nil {
		return nil, fmt.Errorf("reading the rotation status from storage: %w", err)
	}
	st := &rotationStatus{}
	if entry == nil {
		return st, nil
	}
	if err := entry.DecodeJSON(st); err != nil {
		return nil, fmt.Errorf("decoding the stored rotation status: %w", err)
	}
	return st, nil
}

func putRotationStatus(ctx context.Context, s logical.Storage, st *rotationStatus) error {
	entry, err := logical.StorageEntryJSON(rotationStatusStorageKey, st)
	if err != nil {
		return fmt.Errorf("encoding the rotation status: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing the rotation status to storage: %w", err)
	}
	return nil
}

func deleteRotationStatus(ctx context.Context, s logical.Storage) error {
	if err := s.Delete(ctx, rotationStatusStorageKey); err != nil {
		return fmt.Errorf("deleting the rotation status: %w", err)
	}
	return nil
}
