package adobeims

// Tests for rotation's edges that a gremlins run over the root package showed
// no other test pinned down: the schedule, and log entries of v0.1.

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// TestRotationManagerMissingTellsAbsenceFromFailure: only an answer that
// Vault has no rotation manager hands rotation to the plugin's own
// scheduler; a rotation manager that exists and fails is a failure.
func TestRotationManagerMissingTellsAbsenceFromFailure(t *testing.T) {
	for _, tc := range []struct {
		name    string
		err     error
		missing bool
	}{
		{"the SDK's unsupported error", automatedrotationutil.ErrRotationManagerUnsupported, true},
		{"it, wrapped", fmt.Errorf("registering: %w", automatedrotationutil.ErrRotationManagerUnsupported), true},
		{"gRPC Unimplemented", status.Error(codes.Unimplemented, "method RegisterRotationJob"), true},
		{"Community Edition's text", errors.New("rotation manager capabilities are not supported in Vault community edition"), true},
		{"gRPC PermissionDenied", status.Error(codes.PermissionDenied, "permission denied"), false},
		{"gRPC Unavailable", status.Error(codes.Unavailable, "connection refused"), false},
		{"a plain failure", errors.New("rotation job queue is full"), false},
	} {
		if got := rotationManagerMissing(tc.err); got != tc.missing {
			t.Errorf("%s: rotationManagerMissing = %v, want %v", tc.name, got, tc.missing)
		}
	}
}

// TestNextScheduledRotationAfterAFailure: with a cron schedule and no
// window, a scheduled time that has passed is still due (nothing skips it),
// and a failed attempt is retried after the first back-off step, a minute,
// bounded by the schedule's interval, not by a window that is not set.
func TestNextScheduledRotationAfterAFailure(t *testing.T) {
	at := func(hhmmss string) time.Time {
		v, err := time.Parse(time.DateTime, "2026-12-01 "+hhmmss)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cfg := &config{RotationSchedule: "0 * * * *", LastRotation: at("10:00:00")}
	if got, want := nextRotation(cfg, nil, at("11:30:00")), at("11:00:00"); !got.Equal(want) {
		t.Errorf("next rotation half an hour after a missed time = %s, want the missed %s", got, want)
	}
	failed := &rotationStatus{Failures: 1, LastFailure: at("11:00:05")}
	if got, want := nextRotation(cfg, failed, at("11:00:06")), at("11:01:05"); !got.Equal(want) {
		t.Errorf("next rotation after the 11:00 attempt failed = %s, want %s (a minute later)", got, want)
	}
	failed.Failures = 3
	if got, want := nextRotation(cfg, failed, at("11:00:06")), at("11:04:05"); !got.Equal(want) {
		t.Errorf("next rotation after a third failure = %s, want %s (four minutes later)", got, want)
	}

	// With a window, the back-off is bounded by the window, even where it
	// is longer than the schedule's interval.
	cfg = &config{RotationSchedule: "*/30 * * * *", RotationWindow: time.Hour, LastRotation: at("10:30:00")}
	failed = &rotationStatus{Failures: 6, LastFailure: at("11:00:05")}
	if got, want := nextRotation(cfg, failed, at("11:00:06")), at("11:32:05"); !got.Equal(want) {
		t.Errorf("with a 1h window, next rotation after a sixth failure = %s, want %s (32 minutes later)", got, want)
	}
}

// TestRotationWindowFollowsTheSDKMinimum: the window is checked with the
// SDK's scheduler in seconds: below an hour is refused, saying so, and an
// hour or more is stored.
func TestRotationWindowFollowsTheSDKMinimum(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	resp, err := e.write("config", map[string]any{keyRotationSchedule: "0 3 1 * *", keyRotationWindow: "59m"})
	e.mustFail(resp, err, "rotation_window must be 3600 seconds or more")
	for _, window := range []time.Duration{time.Hour, 6 * time.Hour} {
		e.mustOK(e.write("config", map[string]any{keyRotationSchedule: "0 3 1 * *", keyRotationWindow: window.String()}))
		if got := e.stored().RotationWindow; got != window {
			t.Errorf("rotation_window %s stored as %s", window, got)
		}
	}
}

// TestFailedScheduledRotationSaysWhenItsStatusWasNotStored: a scheduled
// rotation that fails records the failure for the back-off and for config
// reads; the error Vault logs names the rotation's failure, and the storage
// failure too when the record could not be written, and only then.
func TestFailedScheduledRotationSaysWhenItsStatusWasNotStored(t *testing.T) {
	for _, storable := range []bool{true, false} {
		t.Run(fmt.Sprintf("status storable %v", storable), func(t *testing.T) {
			e := newRotateEnv(t, rotateOptions{})
			e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
			e.clock.Advance(61 * time.Minute)
			e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: http.StatusForbidden, ErrorCode: "forbidden"})
			if !storable {
				e.beforePut = func(key string) error {
					if key == rotationStatusStorageKey {
						return errors.New("injected: storage full")
					}
					return nil
				}
			}
			err := e.periodic()
			if err == nil || !strings.Contains(err.Error(), "HTTP 403") {
				t.Fatalf("periodic with a refused rotation = %v, want the 403", err)
			}
			if mentions := strings.Contains(err.Error(), "writing the rotation status"); mentions == storable {
				t.Errorf("the error mentions writing the rotation status: %v, want %v: %v", mentions, !storable, err)
			}
			st, gerr := getRotationStatus(t.Context(), e.mem)
			if gerr != nil {
				t.Fatal(gerr)
			}
			if want := map[bool]int{true: 1, false: 0}[storable]; st.Failures != want {
				t.Errorf("stored failures %d, want %d", st.Failures, want)
			}
		})
	}
}

// TestV01LogEntriesAreFinished: v0.1 wrote its write-ahead log entry after
// Adobe had answered the create call, naming the new secret's uuid and no
// list of earlier secrets. After an upgrade, such an entry is finished the
// way v0.1 meant: the rollback deletes the new secret if the config does
// not hold it, the old one if it does, and the next rotation deletes the
// old one without waiting for the rollback.
func TestV01LogEntriesAreFinished(t *testing.T) {
	putV01Entry := func(t *testing.T, e *rotateEnv, newUUID, oldUUID string) {
		t.Helper()
		_, err := framework.PutWAL(t.Context(), e.mem, walKindRotateRoot, map[string]any{
			"client_id": testClientID, "org_id": imsemu.DefaultOrgID, "credential_id": imsemu.DefaultCredentialID,
			"new_uuid": newUUID, "old_uuid": oldUUID,
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// rotated is a node whose config holds a secret Adobe knows by uuid.
	rotated := func(t *testing.T) (*rotateEnv, string) {
		e := newRotateEnv(t, rotateOptions{})
		e.configureForRotation(nil)
		e.mustOK(e.rotate())
		return e, e.stored().ClientSecretUUID
	}

	t.Run("the new secret was not stored", func(t *testing.T) {
		e, held := rotated(t)
		unused := e.addSecretAtAdobe()
		putV01Entry(t, e, unused, held)
		e.rollback()
		e.assertSettled("after finishing the v0.1 entry")
		if e.stored().ClientSecretUUID != held {
			t.Errorf("the config moved off %s", held)
		}
	})
	t.Run("the new secret was stored, the old one not deleted", func(t *testing.T) {
		e, held := rotated(t)
		previous := e.addSecretAtAdobe()
		putV01Entry(t, e, held, previous)
		e.rollback()
		e.assertSettled("after finishing the v0.1 entry")
	})
	t.Run("the next rotation finishes it", func(t *testing.T) {
		e, held := rotated(t)
		previous := e.addSecretAtAdobe()
		putV01Entry(t, e, held, previous)
		e.mustOK(e.rotate()) // the credential has two secrets: only finishing the entry makes room
		e.assertSettled("after finishing the v0.1 entry")
		if e.stored().ClientSecretUUID == held {
			t.Error("the rotation did not store a new secret")
		}
	})
}

// TestNextRotationTakesAnEarlierSecretDeletedByHandAsDone: a secret an
// earlier rotation could not delete, and that a person then deleted in the
// Developer Console, is gone: the next rotation's attempt to delete it gets
// 404, which finishes the earlier rotation's log entry without a warning.
func TestNextRotationTakesAnEarlierSecretDeletedByHandAsDone(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(nil)
	previous := e.uuidsAtAdobe()
	e.setBeforeNet(always(is(opDelete), injected("network down")))
	e.mustOK(e.rotate())
	e.clearHooks()
	if len(previous) != 1 || e.walEntries() != 1 {
		t.Fatalf("setup: secrets before %v, %d log entries after the failed delete; want 1 and 1", previous, e.walEntries())
	}
	ctx := t.Context()
	tok, err := ims.NewClient(e.srv.URL, ims.Credentials{ClientID: testClientID, ClientSecret: e.stored().ClientSecret}, ims.Options{}).Token(ctx, ims.ManagementScopes())
	if err != nil {
		t.Fatal(err)
	}
	if err := ims.NewManagement(e.srv.URL, testClientID, ims.Options{}).DeleteSecret(ctx, tok.AccessToken, imsemu.DefaultOrgID, imsemu.DefaultCredentialID, previous[0]); err != nil {
		t.Fatalf("deleting the previous secret by hand: %v", err)
	}

	logged := len(e.logs.String())
	e.mustOK(e.rotate())
	e.assertSettled("after the next rotation")
	if later := e.logs.String()[logged:]; strings.Contains(later, "[WARN]") {
		t.Errorf("the next rotation logged a warning:\n%s", later)
	}
}
