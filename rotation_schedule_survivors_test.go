package adobeims

// Tests for the rotation schedule's edges that a gremlins run over the root
// package showed no other test pinned down.

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
