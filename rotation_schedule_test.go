package adobeims

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	sdkrotation "github.com/hashicorp/vault/sdk/rotation"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// enterpriseSystemView is a system view with a rotation manager, as Vault
// Enterprise has: it records the jobs registered and deregistered.
type enterpriseSystemView struct {
	logical.StaticSystemView
	mu           sync.Mutex
	registered   []sdkrotation.RotationJobConfigureRequest
	deregistered []sdkrotation.RotationJobDeregisterRequest
}

func (s *enterpriseSystemView) RegisterRotationJob(_ context.Context, req *sdkrotation.RotationJobConfigureRequest) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.registered = append(s.registered, *req)
	return fmt.Sprintf("rotation-job-%d", len(s.registered)), nil
}

func (s *enterpriseSystemView) DeregisterRotationJob(_ context.Context, req *sdkrotation.RotationJobDeregisterRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deregistered = append(s.deregistered, *req)
	return nil
}

func newEnterpriseSystemView() *enterpriseSystemView {
	return &enterpriseSystemView{StaticSystemView: logical.StaticSystemView{DefaultLeaseTTLVal: 24 * time.Hour, MaxLeaseTTLVal: 32 * 24 * time.Hour}}
}

// TestRotationManagerDrivesRotationOnEnterprise: where Vault has a rotation
// manager, a write that sets a schedule registers a job with the schedule's
// fields, the plugin's own scheduler stands aside, Vault's callback rotates,
// and turning rotation off deregisters the job.
func TestRotationManagerDrivesRotationOnEnterprise(t *testing.T) {
	sys := newEnterpriseSystemView()
	e := newRotateEnv(t, rotateOptions{system: sys})
	e.configureForRotation(map[string]any{keyRotationSchedule: "0 3 * * *", keyRotationWindow: "2h"})

	if len(sys.registered) != 1 {
		t.Fatalf("%d rotation jobs registered, want 1", len(sys.registered))
	}
	job := sys.registered[0]
	if job.MountPoint != testMount || job.ReqPath != configStorageKey || job.RotationSchedule != "0 3 * * *" ||
		job.RotationWindow != 2*time.Hour || job.RotationPeriod != 0 {
		t.Errorf("registered job %+v", job)
	}
	data := e.mustOK(e.read("config")).Data
	if data[keyRotationDriver] != driverRotationManager {
		t.Errorf("rotation_driver %v, want %s", data[keyRotationDriver], driverRotationManager)
	}

	// The plugin's scheduler never rotates what the rotation manager drives.
	e.clock.Advance(48 * time.Hour)
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil || e.emu.Stats().ManagementRequests != 0 {
		t.Fatalf("the plugin's scheduler rotated under the rotation manager: %v", err)
	}

	// Vault's rotation manager calls back.
	before := e.stored().ClientSecret
	resp, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RotationOperation, Path: configStorageKey, Storage: e.storage, MountPoint: testMount})
	if err != nil || (resp != nil && resp.IsError()) {
		t.Fatalf("RotateCredential: %v %v", resp, err)
	}
	if e.stored().ClientSecret == before {
		t.Error("RotateCredential did not rotate the secret")
	}
	e.assertSound("after RotateCredential")

	// A write that keeps the schedule registers nothing again.
	e.mustOK(e.write("config", map[string]any{keyScopes: testScopes}))
	if len(sys.registered) != 1 {
		t.Errorf("%d registrations after a write that kept the schedule", len(sys.registered))
	}

	e.mustOK(e.write("config", map[string]any{keyDisableAutomatedRotation: true}))
	if len(sys.deregistered) != 1 || sys.deregistered[0].MountPoint != testMount || sys.deregistered[0].ReqPath != configStorageKey {
		t.Errorf("deregistered %+v, want the config job", sys.deregistered)
	}
	if got := e.mustOK(e.read("config")).Data[keyRotationDriver]; got != driverNone {
		t.Errorf("rotation_driver %v after disabling, want none", got)
	}
}

// TestPluginSchedulerFollowsACronSchedule: on Community Edition the plugin's
// own scheduler computes next_vault_rotation from the cron schedule, skips a
// scheduled time whose window passed unnoticed, and rotates inside a window.
func TestPluginSchedulerFollowsACronSchedule(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	start := time.Date(2026, 12, 1, 1, 0, 0, 0, time.UTC)
	e.clock.Set(start)
	e.configureForRotation(map[string]any{keyRotationSchedule: "0 3 * * *", keyRotationWindow: 3600})

	data := e.mustOK(e.read("config")).Data
	if data[keyRotationDriver] != driverPlugin {
		t.Fatalf("rotation_driver %v, want %s", data[keyRotationDriver], driverPlugin)
	}
	first := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	if got := data[keyNextVaultRotation]; got != first {
		t.Fatalf("next_vault_rotation %v, want %s", got, first)
	}
	if _, ok := data[keyRotationPeriod]; ok {
		t.Error("rotation_period shown with a cron schedule")
	}

	// Past the first window without a periodic call: the next time is the
	// next day's, and nothing rotates outside a window.
	e.clock.Set(first.Add(90 * time.Minute))
	if got := e.mustOK(e.read("config")).Data[keyNextVaultRotation]; got != first.Add(24*time.Hour) {
		t.Fatalf("next_vault_rotation after a missed window %v, want the next day's", got)
	}
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil || e.emu.Stats().ManagementRequests != 0 {
		t.Fatalf("rotated outside the window: %v", err)
	}

	// Inside the next window it rotates, and the next time moves on a day.
	e.clock.Set(first.Add(24*time.Hour + 10*time.Minute))
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil {
		t.Fatal(err)
	}
	if e.stored().ClientSecret == testClientSecret {
		t.Fatal("no rotation inside the window")
	}
	e.assertSound("after the scheduled rotation")
	if got := e.mustOK(e.read("config")).Data[keyNextVaultRotation]; got != first.Add(48*time.Hour) {
		t.Errorf("next_vault_rotation after rotating %v, want %s", got, first.Add(48*time.Hour))
	}
}

// TestRotationPeriodAndScheduleReplaceEachOther: setting one of them clears
// the other; giving both in one write is refused by the SDK's parsing.
func TestRotationPeriodAndScheduleReplaceEachOther(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{keyRotationPeriod: "720h"})
	e.mustOK(e.write("config", map[string]any{keyRotationSchedule: "0 3 1 * *"}))
	if cfg := e.stored(); cfg.RotationPeriod != 0 || cfg.RotationSchedule != "0 3 1 * *" {
		t.Errorf("after setting a schedule: period %s schedule %q", cfg.RotationPeriod, cfg.RotationSchedule)
	}
	e.mustOK(e.write("config", map[string]any{keyRotationPeriod: "720h"}))
	if cfg := e.stored(); cfg.RotationPeriod != 720*time.Hour || cfg.RotationSchedule != "" {
		t.Errorf("after setting a period: period %s schedule %q", cfg.RotationPeriod, cfg.RotationSchedule)
	}
	resp, err := e.write("config", map[string]any{keyRotationPeriod: "720h", keyRotationSchedule: "0 3 1 * *"})
	e.mustFail(resp, err, "mutually exclusive")
	resp, err = e.write("config", map[string]any{keyRotationSchedule: "every day"})
	e.mustFail(resp, err, "rotation_schedule")
	resp, err = e.write("config", map[string]any{keyRotationSchedule: "0 3 1 * *", keyRotationWindow: "10m"})
	e.mustFail(resp, err, "rotation_window")
	if cfg := e.stored(); cfg.RotationPeriod != 720*time.Hour || cfg.RotationSchedule != "" {
		t.Errorf("a refused write changed rotation: period %s schedule %q", cfg.RotationPeriod, cfg.RotationSchedule)
	}
}

// TestConfigOfV01KeepsRotating stores a config the way v0.1 did, and
// checks it reads back unchanged and rotates on its period.
func TestConfigOfV01KeepsRotating(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	enabled := e.clock.Now().Add(-2 * time.Hour).UTC().Truncate(time.Second)
	v01 := fmt.Sprintf(`{"client_id":%q,"client_secret":%q,"scopes":["openid","AdobeID","firefly_api","ff_apis"],`+
		`"ims_url":%q,"org_id":%q,"credential_id":%q,"io_management_url":%q,`+
		`"rotation_period":%d,"rotation_enabled_at":%q}`,
		testClientID, testClientSecret, e.srv.URL, imsemu.DefaultOrgID, imsemu.DefaultCredentialID, e.srv.URL,
		int64(time.Hour), enabled.Format(time.RFC3339))
	if err := e.mem.Put(context.Background(), &logical.StorageEntry{Key: configStorageKey, Value: []byte(v01)}); err != nil {
		t.Fatal(err)
	}

	data := e.mustOK(e.read("config")).Data
	want := map[string]any{
		keyClientID: testClientID, keyIMSURL: e.srv.URL, keyOrgID: imsemu.DefaultOrgID, keyCredentialID: imsemu.DefaultCredentialID,
		keyRotationPeriod: int64(3600), keyRotationDriver: driverPlugin, keyNextVaultRotation: enabled.Add(time.Hour),
	}
	for k, v := range want {
		if data[k] != v {
			t.Errorf("config of v0.1 reads %s=%v, want %v", k, data[k], v)
		}
	}
	if !slices.Equal(data[keyScopes].([]string), []string{"openid", "AdobeID", "firefly_api", "ff_apis"}) {
		t.Errorf("scopes %v", data[keyScopes])
	}
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil {
		t.Fatal(err)
	}
	if e.stored().ClientSecret == testClientSecret {
		t.Fatal("a v0.1 config whose period has passed did not rotate")
	}
	e.assertSound("after rotating a v0.1 config")
	e.creds("creds")
}

// TestRollbackLogIsLocalStorage: a performance secondary must never roll
// back the primary's rotation, so the write-ahead log is not replicated.
func TestRollbackLogIsLocalStorage(t *testing.T) {
	b := newBackend(backendOptions{})
	if !slices.Contains(b.PathsSpecial.LocalStorage, framework.WALPrefix) {
		t.Fatalf("local storage %v lacks the write-ahead log prefix %q", b.PathsSpecial.LocalStorage, framework.WALPrefix)
	}
}

// TestRefusedWriteRegistersNoRotationJob: a write that saves nothing (IMS
// refuses the credential) leaves Vault's rotation manager alone too.
func TestRefusedWriteRegistersNoRotationJob(t *testing.T) {
	sys := newEnterpriseSystemView()
	e := newRotateEnv(t, rotateOptions{system: sys})
	e.configureForRotation(nil)
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_scope"})
	resp, err := e.write("config", map[string]any{keyRotationPeriod: "720h"})
	e.mustFail(resp, err, "nothing was saved")
	if len(sys.registered) != 0 {
		t.Fatalf("a refused write registered %d rotation jobs", len(sys.registered))
	}
}

// TestConfigDeleteDeregistersTheRotationJob: deleting the config leaves no
// job with Vault's rotation manager calling back for it.
func TestConfigDeleteDeregistersTheRotationJob(t *testing.T) {
	sys := newEnterpriseSystemView()
	e := newRotateEnv(t, rotateOptions{system: sys})
	e.configureForRotation(map[string]any{keyRotationPeriod: "720h"})
	if len(sys.registered) != 1 {
		t.Fatalf("%d jobs registered, want 1", len(sys.registered))
	}
	e.mustOK(e.request(logical.DeleteOperation, "config", nil))
	if len(sys.deregistered) != 1 || sys.deregistered[0].ReqPath != configStorageKey {
		t.Fatalf("deregistered %+v after the config was deleted, want the config job", sys.deregistered)
	}
}
