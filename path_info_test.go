package adobeims

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func TestInfoShowsStateButNeverTheToken(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/r", map[string]any{"scopes": "openid"}))
	tok := e.creds("creds/r").Data["access_token"].(string)
	e.creds("creds/r")

	resp := e.mustOK(e.read("info"))
	if strings.Contains(dump(resp, nil), tok) {
		t.Fatal("info shows the shared token")
	}
	d := resp.Data
	if d["version"] != Version || d["client_id"] != testClientID || d["ims_url"] != e.srv.URL || d["configured"] != true {
		t.Errorf("info = %#v", d)
	}
	counters := d["counters"].(map[string]any)
	if counters["shared_reads"] != uint64(2) || counters["cache_hits"] != uint64(1) || counters["ims_token_requests"] != uint64(1) {
		t.Errorf("counters = %#v", counters)
	}
	tokens := d["shared_tokens"].([]map[string]any)
	if len(tokens) != 1 {
		t.Fatalf("shared_tokens = %#v", tokens)
	}
	st := tokens[0]
	expires, err := time.Parse(time.RFC3339, st["expires_at"].(string))
	if err != nil || expires.Sub(e.clock.Now()) < 23*time.Hour {
		t.Errorf("expires_at %v: %v", st["expires_at"], err)
	}
	for _, k := range []string{"minted_at", "refresh_at", "safe_end", "last_read"} {
		if v, _ := st[k].(string); v == "" {
			t.Errorf("token state has no %s: %#v", k, st)
		}
	}
	if v, ok := st["last_error"].(string); !ok || v != "" {
		t.Errorf("token state after successful reads: last_error %#v, want \"\"", st["last_error"])
	}
}

func TestMetricsPrometheusText(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.creds("creds")
	e.creds("creds")

	resp := e.mustOK(e.read("metrics"))
	if ct := resp.Data["http_content_type"]; !strings.HasPrefix(ct.(string), "text/plain; version=0.0.4") {
		t.Errorf("content type %v", ct)
	}
	body := string(resp.Data["http_raw_body"].([]byte))
	for _, want := range []string{
		"# TYPE adobe_ims_token_requests_total counter\nadobe_ims_token_requests_total 1\n",
		"adobe_ims_shared_reads_total 2\n",
		"adobe_ims_cache_hits_total 1\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	for _, line := range strings.Split(strings.TrimSpace(body), "\n") {
		if !strings.HasPrefix(line, "# HELP adobe_ims_") && !strings.HasPrefix(line, "# TYPE adobe_ims_") && !strings.HasPrefix(line, "adobe_ims_") {
			t.Errorf("line %q is not Prometheus text for this plugin", line)
		}
	}
}

func TestIMSCallsAreLoggedAtDebugWithoutSecrets(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	lease := e.creds("creds/d").Secret
	if err := e.revoke(lease); err != nil {
		t.Fatal(err)
	}
	logs := e.logs.String()
	for _, op := range []string{"op=token", "op=invalidate"} {
		found := false
		for _, line := range strings.Split(logs, "\n") {
			if strings.Contains(line, "[DEBUG] ims: adobe request attempt") && strings.Contains(line, op) &&
				strings.Contains(line, "status=200") && strings.Contains(line, "duration=") && strings.Contains(line, "x_debug_id=") {
				found = true
			}
		}
		if !found {
			t.Errorf("no debug line for %s with status, duration and x_debug_id in:\n%s", op, logs)
		}
	}
	// newTestEnv's cleanup searches the same log for the secret and every token.
}

func TestInfoShowsRotationState(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false, "rotation_period": "24h", "org_id": "ORG1@AdobeOrg", "credential_id": "cred1"})
	rot, ok := e.mustOK(e.read("info")).Data["rotation"].(map[string]any)
	if next, _ := rot["next_rotation"].(string); !ok || rot["rotation_period"] != int64(86400) || next == "" {
		t.Fatalf("info rotation = %#v", rot)
	}
}

func TestEveryWriteIsForwardedToTheActiveNode(t *testing.T) {
	e := newTestEnv(t)
	for _, p := range e.b.Paths {
		for op, h := range p.Operations {
			po, ok := h.(*framework.PathOperation)
			if !ok {
				t.Fatalf("%s %s: %T", op, p.Pattern, h)
			}
			if op == logical.ReadOperation || op == logical.ListOperation {
				continue
			}
			if !po.ForwardPerformanceStandby || !po.ForwardPerformanceSecondary {
				t.Errorf("%s %s changes state but is not forwarded to the active node", op, p.Pattern)
			}
		}
	}
}
