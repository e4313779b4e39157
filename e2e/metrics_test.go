package e2e

import (
	"io"
	"mime"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// mtPolicy is the least-privilege policy of docs/monitoring.md for the
// token Prometheus scrapes with, taken from the document itself.
func mtPolicy(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	const marker = "```hcl\n# policy \"adobe-ims-metrics\"\n"
	start := strings.Index(doc, marker)
	if start < 0 {
		t.Fatal("docs/monitoring.md has no adobe-ims-metrics policy block")
	}
	policy := doc[start+len("```hcl\n"):]
	return policy[:strings.Index(policy, "```")]
}

// mtScrape GETs a path the way Prometheus' scrape job of docs/monitoring.md
// does: the Vault token as a bearer token, Prometheus' Accept header.
func mtScrape(t *testing.T, v *vaultServer, token, path string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://"+v.addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Accept", "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4,*/*;q=0.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// TestMetricsScrapedThroughVault: through a real Vault, a token holding only
// the documented policy reads /v1/adobe/metrics as Prometheus would, and
// gets 200 with the Prometheus text content type and an exposition that
// parses and shows the shared token; the same token reads nothing else.
func TestMetricsScrapedThroughVault(t *testing.T) {
	emu := startEmulator(t, time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu)
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api,ff_apis")
	if _, err := v.client.Logical().Read("adobe/creds/firefly"); err != nil {
		t.Fatal(err)
	}

	if out, err := v.cliAs(v.token, mtPolicy(t), "policy", "write", "adobe-ims-metrics", "-"); err != nil {
		t.Fatalf("vault policy write adobe-ims-metrics: %v\n%s", err, out)
	}
	s, err := v.client.Auth().Token().Create(&api.TokenCreateRequest{Policies: []string{"adobe-ims-metrics"}, TTL: "10m"})
	if err != nil || s.Auth == nil {
		t.Fatalf("token create: %v", err)
	}
	token := s.Auth.ClientToken

	status, header, body := mtScrape(t, v, token, "/v1/adobe/metrics")
	if status != http.StatusOK {
		t.Fatalf("GET /v1/adobe/metrics: %d\n%s", status, body)
	}
	ct := header.Get("Content-Type")
	if mt, params, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" || params["version"] != "0.0.4" {
		t.Errorf("Content-Type %q, want the Prometheus text format (text/plain; version=0.0.4)", ct)
	}
	if f := expfmt.ResponseFormat(header); f.FormatType() != expfmt.TypeTextPlain {
		t.Errorf("Prometheus reads Content-Type %q as %q, not the text format", ct, f)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	for _, name := range []string{
		"adobe_ims_token_requests_total", "adobe_ims_shared_reads_total", "adobe_ims_request_duration_seconds",
		"adobe_ims_shared_token_expiry_timestamp_seconds", "adobe_ims_shared_token_safe_end_timestamp_seconds",
		"adobe_ims_shared_token_refresh_timestamp_seconds", "adobe_ims_shared_token_refresh_failures",
		"adobe_ims_throttled_until_timestamp_seconds", "adobe_ims_rotation_next_timestamp_seconds",
		"adobe_ims_build_info",
	} {
		if fams[name] == nil {
			t.Errorf("the exposition lacks %s:\n%s", name, body)
		}
	}
	if f := fams["adobe_ims_shared_token_expiry_timestamp_seconds"]; f != nil {
		// The config's token (minted by the verifying write) and the role's.
		if n := len(f.GetMetric()); n != 2 {
			t.Errorf("%d shared tokens in the exposition, want 2", n)
		}
		for _, m := range f.GetMetric() {
			if exp := m.GetGauge().GetValue(); exp < float64(time.Now().Unix()) {
				t.Errorf("a shared token expires at %v, in the past: %v", exp, m.GetLabel())
			}
		}
	}
	if f := fams["adobe_ims_build_info"]; f != nil && len(f.GetMetric()) == 1 {
		if l := f.GetMetric()[0].GetLabel(); len(l) != 1 || l[0].GetValue() != pluginVersions[0] {
			t.Errorf("build info %v, want version %s", l, pluginVersions[0])
		}
	}
	for _, tok := range emu.Tokens() {
		if strings.Contains(string(body), tok.AccessToken) {
			t.Error("the metrics carry an issued access token")
		}
	}
	if strings.Contains(string(body), testClientSecret) {
		t.Error("the metrics carry the client secret")
	}

	// Least privilege: nothing but the metrics.
	for _, path := range []string{"/v1/adobe/info", "/v1/adobe/creds/firefly", "/v1/adobe/config"} {
		if status, _, body := mtScrape(t, v, token, path); status != http.StatusForbidden {
			t.Errorf("GET %s with the metrics token: %d, want 403\n%s", path, status, body)
		}
	}
	// And no token, no metrics.
	if status, _, _ := mtScrape(t, v, "", "/v1/adobe/metrics"); status == http.StatusOK {
		t.Error("GET /v1/adobe/metrics without a token answered 200")
	}
}
