package e2e

import (
	"testing"
	"time"
)

// TestCronScheduleOnCommunityEdition: Vault Community Edition has no rotation
// manager, so a config write with a cron schedule leaves rotation to the
// plugin's own scheduler, and the config read says so and shows the next
// scheduled time the way the SDK formats it.
func TestCronScheduleOnCommunityEdition(t *testing.T) {
	emu := startEmulator(t, 0)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	before := time.Now().UTC()
	rtConfigure(v, emu, "rotation_schedule=0 3 * * *", "rotation_window=3600")
	after := time.Now().UTC()

	cfg, err := v.client.Logical().Read("adobe/config")
	if err != nil || cfg == nil {
		t.Fatalf("read adobe/config: %v", err)
	}
	if got := cfg.Data["rotation_driver"]; got != "plugin_scheduler" {
		t.Errorf("rotation_driver %v on Community Edition, want plugin_scheduler", got)
	}
	if cfg.Data["rotation_schedule"] != "0 3 * * *" {
		t.Errorf("rotation_schedule %v", cfg.Data["rotation_schedule"])
	}
	next, err := time.Parse(time.RFC3339, cfg.Data["next_vault_rotation"].(string))
	if err != nil {
		t.Fatalf("next_vault_rotation %v: %v", cfg.Data["next_vault_rotation"], err)
	}
	// The next 03:00 UTC after the write.
	want := func(t0 time.Time) time.Time {
		d := time.Date(t0.Year(), t0.Month(), t0.Day(), 3, 0, 0, 0, time.UTC)
		if !d.After(t0) {
			d = d.Add(24 * time.Hour)
		}
		return d
	}
	if !next.Equal(want(before)) && !next.Equal(want(after)) {
		t.Errorf("next_vault_rotation %s, want %s", next, want(after))
	}
	if _, ok := cfg.Data["rotation_period"]; ok {
		t.Errorf("rotation_period shown with a cron schedule: %v", cfg.Data["rotation_period"])
	}
	rtCheckNoSecrets(t, "the Vault log "+v.logPath, v.logText())
}
