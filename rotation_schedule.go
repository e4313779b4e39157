package adobeims

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/logical"
	sdkrotation "github.com/hashicorp/vault/sdk/rotation"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

const (
	// minRotationPeriod lets tests rotate every few seconds; Vault checks
	// the schedule about once a minute anyway.
	minRotationPeriod = 10 * time.Second
	// advisedMinRotationPeriod is where a shorter period earns a warning:
	// each rotation mints two tokens and changes the credential at Adobe.
	advisedMinRotationPeriod = time.Hour
)

// The SDK's standard automated-rotation fields (helper/automatedrotationutil),
// and what a config read reports of them.
const (
	keyRotationSchedule         = "rotation_schedule"
	keyRotationWindow           = "rotation_window"
	keyDisableAutomatedRotation = "disable_automated_rotation"
	keyRotationPolicy           = "rotation_policy"
	keyLastVaultRotation        = "last_vault_rotation"
	keyNextVaultRotation        = "next_vault_rotation"
	keyRotationDriver           = "rotation_driver"
)

// Who drives automated rotation, as a config read says.
const (
	driverNone            = "none"
	driverRotationManager = "vault_rotation_manager" // Vault Enterprise calls RotateCredential
	driverPlugin          = "plugin_scheduler"       // the plugin's periodic function rotates
)

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

// rotateIfDue rotates the secret when the schedule says so and Vault's
// rotation manager does not drive rotation (Vault Community Edition).
// PeriodicFunc calls it about once a minute on the node that may write.
//
// It does not queue behind a config write or a rotation in progress: Vault
// runs the periodic function (and, after it, the rollback of interrupted
// rotations) in one call, which must not stall; the schedule is checked
// again a minute later.
func (b *backend) rotateIfDue(ctx context.Context, s logical.Storage) error {
	unlock, ok := b.writer.tryLock(opRotateSchedule)
	if !ok {
		b.logger("rotate").Debug("another operation on the credential is running; the rotation schedule is checked again on the next periodic call")
		return nil
	}
	defer unlock()
	cfg, err := getConfig(ctx, s)
	if err != nil || cfg == nil || rotationDriver(cfg) != driverPlugin {
		return err
	}
	st, err := getRotationStatus(ctx, s)
	if err != nil {
		return err
	}
	now := b.opts.now()
	if now.Before(nextRotation(cfg, st, now)) {
		return nil
	}
	return b.rotateAutomatically(ctx, s, cfg, st)
}

// rotateCredential is the callback of Vault Enterprise's rotation manager
// (framework.Backend.RotateCredential): the same rotation as rotate-root,
// one writer at a time, with failures recorded as the plugin's own
// scheduler records them.
func (b *backend) rotateCredential(ctx context.Context, req *logical.Request) error {
	unlock, err := b.writer.lock(ctx, opRotateSchedule)
	if err != nil {
		return err
	}
	defer unlock()
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return err
	}
	if cfg == nil {
		return errNotConfigured
	}
	st, err := getRotationStatus(ctx, req.Storage)
	if err != nil {
		return err
	}
	return b.rotateAutomatically(ctx, req.Storage, cfg, st)
}

func (b *backend) rotateAutomatically(ctx context.Context, s logical.Storage, cfg *config, st *rotationStatus) error {
	now := b.opts.now()
	if _, err := b.rotate(ctx, s); err != nil {
		b.metrics.rotationFailures.Add(1)
		st.Failures++
		st.LastFailure = now.UTC()
		st.LastError = err.Error()
		if perr := putRotationStatus(ctx, s, st); perr != nil {
			err = errors.Join(err, perr)
		}
		b.logger("rotate").Error("automatic rotation of the client secret failed; the current secret stays in use",
			"error", err, "failures", st.Failures, "next_attempt", formatTime(nextRotation(cfg, st, now)))
		return fmt.Errorf("automatic rotation of the client secret: %w", err)
	}
	return nil
}

// rotationDriver says who rotates the secret automatically.
func rotationDriver(cfg *config) string {
	switch {
	case cfg.DisableAutomatedRotation || (cfg.RotationPeriod <= 0 && cfg.RotationSchedule == ""):
		return driverNone
	case cfg.RotationJobID != "":
		return driverRotationManager
	}
	return driverPlugin
}

// nextRotation is when the secret is rotated next, as seen at now: a period
// after the last rotation (or after the schedule was turned on, if later),
// or the schedule's next time after that, skipping times whose window has
// passed; and not before a failed attempt's back-off ends. Zero when
// automated rotation is off.
func nextRotation(cfg *config, st *rotationStatus, now time.Time) time.Time {
	if rotationDriver(cfg) == driverNone {
		return time.Time{}
	}
	base := cfg.LastRotation
	if cfg.RotationEnabledAt.After(base) {
		base = cfg.RotationEnabledAt
	}
	var next time.Time
	retryLimit := cfg.RotationPeriod
	if cfg.RotationSchedule != "" {
		sched, err := sdkrotation.DefaultScheduler.Parse(cfg.RotationSchedule)
		if err != nil {
			return time.Time{} // refused on write; a stored one always parses
		}
		next = sched.Next(base)
		for cfg.RotationWindow > 0 && !now.Before(next.Add(cfg.RotationWindow)) {
			next = sched.Next(next)
		}
		retryLimit = sched.Next(next).Sub(next)
		if cfg.RotationWindow > 0 {
			retryLimit = cfg.RotationWindow
		}
	} else {
		next = base.Add(cfg.RotationPeriod)
	}
	if st != nil && st.Failures > 0 {
		if retry := st.LastFailure.Add(retryDelay(st.Failures, retryLimit)); retry.After(next) {
			next = retry
		}
	}
	return next
}

// retryDelay doubles from a minute to an hour, and is never longer than
// limit (the period, or the schedule's window).
func retryDelay(failures int, limit time.Duration) time.Duration {
	return min(time.Minute<<min(max(failures-1, 0), 6), time.Hour, max(limit, time.Minute))
}

// scheduleRotation starts the schedule when automated rotation is turned
// on, so that the first rotation is due one period (or one scheduled time)
// later rather than at once.
func scheduleRotation(cfg, old *config, now time.Time) {
	switch {
	case rotationDriver(cfg) == driverNone:
		cfg.RotationEnabledAt = time.Time{}
	case old == nil || rotationDriver(old) == driverNone || old.RotationSchedule != cfg.RotationSchedule || old.RotationPeriod != cfg.RotationPeriod:
		cfg.RotationEnabledAt = now.UTC()
	}
}

// mergeRotationFields applies the standard rotation fields given in d to cfg,
// with the SDK's parsing and checks. rotation_period and rotation_schedule
// replace each other: setting one clears the other.
func mergeRotationFields(cfg *config, d *framework.FieldData) error {
	p := automatedrotationutil.AutomatedRotationParams{
		RotationSchedule: cfg.RotationSchedule, RotationWindow: cfg.RotationWindow, RotationPeriod: cfg.RotationPeriod,
		DisableAutomatedRotation: cfg.DisableAutomatedRotation, RotationPolicy: cfg.RotationPolicy,
	}
	if v, given := d.GetOk(keyRotationPeriod); given && v.(int) != 0 {
		p.RotationSchedule, p.RotationWindow = "", 0
	}
	if v, given := d.GetOk(keyRotationSchedule); given && v.(string) != "" {
		p.RotationPeriod = 0
	}
	if err := p.ParseAutomatedRotationFields(d); err != nil {
		return fmt.Errorf("%w: give either rotation_period (e.g. \"30d\") or rotation_schedule (cron, e.g. \"0 3 1 * *\") with an optional rotation_window", err)
	}
	switch {
	case p.RotationPeriod < 0:
		return fmt.Errorf("rotation_period %s is negative: give a duration such as \"30d\", or 0 to turn automatic rotation off", p.RotationPeriod)
	case p.RotationPeriod > 0 && p.RotationPeriod < minRotationPeriod:
		return fmt.Errorf("rotation_period %s is shorter than the minimum of %s; 0 turns automatic rotation off", p.RotationPeriod, minRotationPeriod)
	case p.RotationWindow < 0:
		return fmt.Errorf("rotation_window %s is negative", p.RotationWindow)
	case p.RotationWindow > 0:
		if err := sdkrotation.DefaultScheduler.ValidateRotationWindow(int(p.RotationWindow / time.Second)); err != nil {
			return err
		}
	}
	cfg.RotationSchedule, cfg.RotationWindow, cfg.RotationPeriod = p.RotationSchedule, p.RotationWindow, p.RotationPeriod
	cfg.DisableAutomatedRotation, cfg.RotationPolicy = p.DisableAutomatedRotation, p.RotationPolicy
	if cfg.RotationSchedule == "" {
		cfg.RotationWindow = 0
	}
	return nil
}

// registerRotation tells Vault's rotation manager about the schedule cfg
// has, or that it has none, after a write that changed it. Where Vault has
// no rotation manager (Community Edition says so, or the call is not
// implemented over the plugin's channel), the plugin's own scheduler drives
// rotation instead: cfg.RotationJobID stays empty.
func (b *backend) registerRotation(ctx context.Context, req *logical.Request, cfg, old *config) error {
	if old != nil && old.RotationSchedule == cfg.RotationSchedule && old.RotationPeriod == cfg.RotationPeriod &&
		old.RotationWindow == cfg.RotationWindow && old.DisableAutomatedRotation == cfg.DisableAutomatedRotation &&
		old.RotationPolicy == cfg.RotationPolicy {
		cfg.RotationJobID = old.RotationJobID
		return nil
	}
	cfg.RotationJobID = ""
	if cfg.DisableAutomatedRotation || (cfg.RotationSchedule == "" && cfg.RotationPeriod == 0) {
		if old == nil || old.RotationJobID == "" {
			return nil
		}
		err := b.System().DeregisterRotationJob(ctx, &sdkrotation.RotationJobDeregisterRequest{MountPoint: req.MountPoint, ReqPath: req.Path})
		if err != nil && !rotationManagerMissing(err) {
			return fmt.Errorf("deregistering the rotation job from Vault's rotation manager: %w", err)
		}
		return nil
	}
	id, err := b.System().RegisterRotationJob(ctx, &sdkrotation.RotationJobConfigureRequest{
		Name: "adobe-ims-client-secret", MountPoint: req.MountPoint, ReqPath: req.Path,
		RotationSchedule: cfg.RotationSchedule, RotationWindow: cfg.RotationWindow, RotationPeriod: cfg.RotationPeriod,
		RotationPolicy: cfg.RotationPolicy,
	})
	switch {
	case err == nil:
		cfg.RotationJobID = id
	case rotationManagerMissing(err):
		b.logger("rotate").Debug("Vault has no rotation manager; the plugin's own scheduler rotates the secret", "reason", err)
	default:
		return fmt.Errorf("registering the rotation job with Vault's rotation manager: %w", err)
	}
	return nil
}

// rotationManagerMissing tells an answer that Vault has no rotation manager
// (Community Edition, or a Vault too old for the call over gRPC) from a
// failure of one that exists.
func rotationManagerMissing(err error) bool {
	if errors.Is(err, automatedrotationutil.ErrRotationManagerUnsupported) {
		return true
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unimplemented {
		return true
	}
	msg := err.Error()
	return strings.Contains(msg, automatedrotationutil.ErrRotationManagerUnsupported.Error()) ||
		strings.Contains(msg, "not supported in Vault community edition") ||
		strings.Contains(msg, "Unimplemented") || strings.Contains(msg, "not implemented")
}

// getRotationStatus returns the stored rotation status, or an empty one.
func getRotationStatus(ctx context.Context, s logical.Storage) (*rotationStatus, error) {
	st, err := getJSON[rotationStatus](ctx, s, rotationStatusStorageKey, "rotation status")
	if err == nil && st == nil {
		st = &rotationStatus{}
	}
	return st, err
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
