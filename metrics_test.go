package adobeims

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/tokencache"
)

// families is a parsed exposition, by metric name.
type families map[string]*dto.MetricFamily

// scrape reads the metrics path as Prometheus would and parses the answer
// with the Prometheus text parser. The body must carry no token or secret.
func scrape(t *testing.T, e *testEnv) families {
	t.Helper()
	resp := e.mustOK(e.read("metrics"))
	ct, _ := resp.Data["http_content_type"].(string)
	if ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("content type %q, want the Prometheus text format", ct)
	}
	if mt, params, err := mime.ParseMediaType(ct); err != nil || mt != "text/plain" || params["version"] != "0.0.4" {
		t.Errorf("content type %q parses as %q %v %v", ct, mt, params, err)
	}
	if resp.Data["http_status_code"] != 200 {
		t.Errorf("status %v", resp.Data["http_status_code"])
	}
	body, _ := resp.Data["http_raw_body"].([]byte)
	text := string(body)
	if strings.Contains(text, testClientSecret) {
		t.Error("the metrics carry the client secret")
	}
	for _, tok := range e.emu.Tokens() {
		if strings.Contains(text, tok.AccessToken) {
			t.Error("the metrics carry an issued access token")
		}
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("the exposition does not parse: %v\n%s", err, body)
	}
	return fams
}

// value is the value of the one series of name whose labels include want
// (pairs of name and value); it fails the test unless exactly one matches.
func (f families) value(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	ms := f.series(name, want...)
	if len(ms) != 1 {
		t.Fatalf("%d series of %s with labels %v, want 1", len(ms), name, want)
	}
	m := ms[0]
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Histogram != nil:
		return float64(m.Histogram.GetSampleCount())
	}
	t.Fatalf("%s has no value", name)
	return 0
}

func (f families) series(name string, want ...string) []*dto.Metric {
	var out []*dto.Metric
	fam := f[name]
	if fam == nil {
		return nil
	}
	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		ok := true
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				ok = false
			}
		}
		if ok {
			out = append(out, m)
		}
	}
	return out
}

// documentedMetric is a row of the metrics table in docs/monitoring.md.
type documentedMetric struct {
	typ    string
	labels []string
}

var docMetricRow = regexp.MustCompile("^\\| `(adobe_ims_[a-z0-9_]+)` \\| (counter|gauge|histogram) \\|([^|]*)\\|")

func documentedMetrics(t *testing.T) map[string]documentedMetric {
	t.Helper()
	b, err := os.ReadFile("docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]documentedMetric{}
	for _, line := range strings.Split(string(b), "\n") {
		m := docMetricRow.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		var labels []string
		for _, l := range regexp.MustCompile("`([a-z_]+)`").FindAllStringSubmatch(m[3], -1) {
			labels = append(labels, l[1])
		}
		slices.Sort(labels)
		out[m[1]] = documentedMetric{typ: m[2], labels: labels}
	}
	if len(out) < 20 {
		t.Fatalf("docs/monitoring.md documents %d metrics; the table was not found", len(out))
	}
	return out
}

// exercised is a mount after a shared read, a dedicated read and its
// revocation, a rotation by hand, a background refresh and an automatic
// rotation that failed.
type exercised struct {
	e            *rotateEnv
	fams         families
	lastRotation time.Time
	failedAt     time.Time
}

func exerciseEverything(t *testing.T) *exercised {
	t.Helper()
	e := newRotateEnv(t, rotateOptions{})
	ctx := context.Background()
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": modeDedicated}))

	e.creds("creds")
	if err := e.revoke(e.creds("creds/d").Secret); err != nil {
		t.Fatal(err)
	}
	e.mustOK(e.rotate())
	x := &exercised{e: e, lastRotation: e.stored().LastRotation}

	// Past the shared token's refresh point: the periodic refresh replaces it.
	e.clock.Advance(17 * time.Hour)
	if err := e.b.refreshSharedTokens(ctx, e.storage); err != nil {
		t.Fatal(err)
	}
	// The scheduled rotation is due and the I/O Management API fails.
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointManagement, Kind: imsemu.KindStatus, Status: 503})
	if err := e.b.rotateIfDue(ctx, e.storage); err == nil {
		t.Fatal("the automatic rotation succeeded against a failing I/O Management API")
	}
	x.failedAt = e.clock.Now()
	e.emu.SetFault(nil)

	x.fams = scrape(t, e.testEnv)
	for _, s := range e.allSecrets() {
		body, _ := e.mustOK(e.read("metrics")).Data["http_raw_body"].([]byte)
		if strings.Contains(string(body), s) {
			t.Error("the metrics carry a client secret")
		}
	}
	return x
}

// TestMetricsExpositionCarriesEveryDocumentedMetric: after a read, a
// refresh and rotations, the exposition parses, carries every metric of
// docs/monitoring.md with its type and labels and nothing undocumented, and
// the values say what happened.
func TestMetricsExpositionCarriesEveryDocumentedMetric(t *testing.T) {
	x := exerciseEverything(t)
	e, f := x.e, x.fams
	doc := documentedMetrics(t)

	for name, d := range doc {
		fam := f[name]
		if fam == nil {
			t.Errorf("documented metric %s is not in the exposition", name)
			continue
		}
		if got := strings.ToLower(fam.GetType().String()); got != d.typ {
			t.Errorf("%s is a %s, documented as a %s", name, got, d.typ)
		}
		if fam.GetHelp() == "" {
			t.Errorf("%s has no help", name)
		}
		for _, m := range fam.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			slices.Sort(labels)
			if !slices.Equal(labels, d.labels) {
				t.Errorf("%s has labels %v, documented %v", name, labels, d.labels)
				break
			}
		}
	}
	for name := range f {
		if _, ok := doc[name]; !ok {
			t.Errorf("%s is exported but not documented in docs/monitoring.md", name)
		}
	}

	now := e.clock.Now()
	// Today's counters keep their names and meanings.
	if v := f.value(t, "adobe_ims_shared_reads_total"); v != 1 {
		t.Errorf("shared reads %v, want 1", v)
	}
	if v := f.value(t, "adobe_ims_dedicated_mints_total"); v != 1 {
		t.Errorf("dedicated mints %v, want 1", v)
	}
	if v := f.value(t, "adobe_ims_invalidations_total"); v != 1 {
		t.Errorf("invalidations %v, want 1", v)
	}
	if v := f.value(t, "adobe_ims_background_refreshes_total"); v != 1 {
		t.Errorf("background refreshes %v, want 1", v)
	}
	if v := f.value(t, "adobe_ims_token_requests_total"); v < 3 {
		t.Errorf("token requests %v, want at least 3", v)
	}

	// Every HTTP attempt is in the histogram, under its endpoint and outcome.
	var observed float64
	for _, m := range f["adobe_ims_request_duration_seconds"].GetMetric() {
		observed += float64(m.GetHistogram().GetSampleCount())
		if m.GetHistogram().GetSampleSum() < 0 {
			t.Errorf("negative duration sum %v", m)
		}
	}
	if attempts := f.value(t, "adobe_ims_http_attempts_total"); observed != attempts {
		t.Errorf("the histogram holds %v attempts, adobe_ims_http_attempts_total says %v", observed, attempts)
	}
	if n := len(f["adobe_ims_request_duration_seconds"].GetMetric()); n != len(imsEndpoints)*len(imsOutcomes) {
		t.Errorf("%d duration series, want every endpoint and outcome: %d", n, len(imsEndpoints)*len(imsOutcomes))
	}
	duration := func(endpoint, outcome string) float64 {
		return f.value(t, "adobe_ims_request_duration_seconds", "endpoint", endpoint, "outcome", outcome)
	}
	if v := duration("token", "ok"); v < 3 {
		t.Errorf("token ok attempts %v, want at least 3", v)
	}
	if v := duration("invalidate", "ok"); v != 1 {
		t.Errorf("invalidate ok attempts %v, want 1", v)
	}
	if v := duration("management", "ok"); v < 3 {
		t.Errorf("management ok attempts %v, want the list, create and delete of the rotation", v)
	}
	if v := duration("management", "server_error"); v != 3 {
		t.Errorf("management server_error attempts %v, want 3 (a 503 retried twice)", v)
	}
	if v := duration("token", "network") + duration("token", "throttled") + duration("token", "client_error"); v != 0 {
		t.Errorf("%v failed token attempts, want none", v)
	}

	// The shared token: its times, under a bounded label, never the token.
	key := tokencache.Key(strings.Split(testScopes, ","))
	labels := scopeSetLabels(key)
	if !regexp.MustCompile(`^[0-9a-f]{12}$`).MatchString(labels[0]) || labels[1] != key {
		t.Errorf("scope set labels %q", labels)
	}
	tok := func(name string) time.Time {
		v := f.value(t, name, "scope_set", labels[0], "scopes", key)
		return time.Unix(0, int64(v*1e9))
	}
	expiry, safeEnd, refresh := tok("adobe_ims_shared_token_expiry_timestamp_seconds"),
		tok("adobe_ims_shared_token_safe_end_timestamp_seconds"), tok("adobe_ims_shared_token_refresh_timestamp_seconds")
	if left := expiry.Sub(now); left < 23*time.Hour || left > 24*time.Hour {
		t.Errorf("the refreshed token expires in %s, want about 24h", left)
	}
	if d := expiry.Sub(safeEnd); d < 5*time.Minute-time.Millisecond || d > 5*time.Minute+time.Millisecond {
		t.Errorf("safe end %s before expiry, want 5m", d)
	}
	if d := expiry.Sub(refresh); d < 8*time.Hour-time.Second || d > 8*time.Hour+time.Second {
		t.Errorf("replacement due %s before expiry, want a third of the life", d)
	}
	if v := f.value(t, "adobe_ims_shared_token_refresh_failures", "scope_set", labels[0]); v != 0 {
		t.Errorf("refresh failures %v after a successful refresh", v)
	}

	// Rotation: the one by hand succeeded, the automatic one failed.
	if v := f.value(t, "adobe_ims_rotation_last_success_timestamp_seconds"); v != unixSeconds(x.lastRotation) || v == 0 {
		t.Errorf("last rotation %v, want %v", v, unixSeconds(x.lastRotation))
	}
	if v := f.value(t, "adobe_ims_rotation_next_timestamp_seconds"); v != unixSeconds(x.failedAt.Add(time.Minute)) {
		t.Errorf("next rotation %v, want a minute after the failure: %v", v, unixSeconds(x.failedAt.Add(time.Minute)))
	}
	if v := f.value(t, "adobe_ims_rotation_consecutive_failures"); v != 1 {
		t.Errorf("consecutive rotation failures %v, want 1", v)
	}
	if v := f.value(t, "adobe_ims_rotation_failures_total"); v != 1 {
		t.Errorf("rotation failures %v, want 1", v)
	}

	if v := f.value(t, "adobe_ims_throttled_until_timestamp_seconds"); v != unixSeconds(e.b.throttledUntil()) {
		t.Errorf("throttled until %v, want %v", v, unixSeconds(e.b.throttledUntil()))
	}
	if v := f.value(t, "adobe_ims_build_info", "version", Version); v != 1 {
		t.Errorf("build info %v", v)
	}

	// A success clears the failures; the counter keeps them.
	e.clock.Advance(time.Minute)
	if err := e.b.rotateIfDue(context.Background(), e.storage); err != nil {
		t.Fatal(err)
	}
	f = scrape(t, e.testEnv)
	if v := f.value(t, "adobe_ims_rotation_consecutive_failures"); v != 0 {
		t.Errorf("consecutive rotation failures %v after a success, want 0", v)
	}
	if v := f.value(t, "adobe_ims_rotation_failures_total"); v != 1 {
		t.Errorf("rotation failures %v after a success, want still 1", v)
	}
	if v, want := f.value(t, "adobe_ims_rotation_last_success_timestamp_seconds"), unixSeconds(e.stored().LastRotation); v != want || v <= unixSeconds(x.lastRotation) {
		t.Errorf("last rotation %v, want %v", v, want)
	}
	if v, want := f.value(t, "adobe_ims_rotation_next_timestamp_seconds"), unixSeconds(e.stored().LastRotation.Add(time.Hour)); v != want {
		t.Errorf("next rotation %v, want an hour after the last: %v", v, want)
	}
}

// TestSharedTokenRefreshFailuresAreCounted: each failed replacement of a
// shared token adds one to its gauge, and a success sets it back to 0.
func TestSharedTokenRefreshFailuresAreCounted(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.creds("creds")
	ctx := context.Background()
	key := tokencache.Key(strings.Split(testScopes, ","))
	failures := func() float64 {
		return scrape(t, e).value(t, "adobe_ims_shared_token_refresh_failures", "scopes", key)
	}
	if v := failures(); v != 0 {
		t.Fatalf("failures %v before any", v)
	}

	e.clock.Advance(17 * time.Hour)
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 503})
	for i, wait := range []time.Duration{5 * time.Second, 10 * time.Second} {
		if err := e.b.refreshSharedTokens(ctx, e.storage); err == nil {
			t.Fatal("refresh succeeded against a failing IMS")
		}
		if v := failures(); v != float64(i+1) {
			t.Errorf("after %d failed refreshes the gauge says %v", i+1, v)
		}
		e.clock.Advance(wait) // the back-off
	}
	f := scrape(t, e)
	if v := f.value(t, "adobe_ims_request_duration_seconds", "endpoint", "token", "outcome", "server_error"); v != 6 {
		t.Errorf("%v token attempts answered 5xx, want 6 (2 refreshes, each retried twice)", v)
	}
	// The token is still served meanwhile, and the alert's condition holds
	// only once its safe end nears.
	if left := time.Unix(0, int64(f.value(t, "adobe_ims_shared_token_safe_end_timestamp_seconds", "scopes", key)*1e9)).Sub(e.clock.Now()); left < 6*time.Hour {
		t.Errorf("safe end in %s, want the old token's remaining ~7h", left)
	}

	e.emu.SetFault(nil)
	if err := e.b.refreshSharedTokens(ctx, e.storage); err != nil {
		t.Fatal(err)
	}
	if v := failures(); v != 0 {
		t.Errorf("failures %v after a successful refresh", v)
	}
}

// TestThrottledAttemptsAreLabelled: a 429 is a throttled attempt, and the
// throttle gauge says until when the plugin holds back token requests.
func TestThrottledAttemptsAreLabelled(t *testing.T) {
	e := newTestEnv(t)
	e.configure(map[string]any{"verify": false})
	e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 429, RetryAfter: "120"})
	if resp, err := e.read("creds"); err == nil && (resp == nil || !resp.IsError()) {
		t.Fatal("a read succeeded while IMS throttles")
	}
	f := scrape(t, e)
	if v := f.value(t, "adobe_ims_request_duration_seconds", "endpoint", "token", "outcome", "throttled"); v < 1 {
		t.Errorf("%v throttled token attempts, want at least 1", v)
	}
	until := e.b.throttledUntil()
	if v := f.value(t, "adobe_ims_throttled_until_timestamp_seconds"); v != unixSeconds(until) {
		t.Errorf("throttled until %v, want %v", v, unixSeconds(until))
	}
	if now := e.clock.Now(); until.Before(now.Add(119*time.Second)) || until.After(now.Add(122*time.Second)) {
		t.Errorf("throttled until %s, want about 120s after %s: IMS answered 429 with Retry-After: 120", until, now)
	}
}

// TestMetricsArePerMount: each mount has its own registry, and nothing is
// registered with Prometheus' global one (the plugin is multiplexed).
func TestMetricsArePerMount(t *testing.T) {
	a, b := newTestEnv(t), newTestEnv(t)
	a.configure(map[string]any{"verify": false})
	b.configure(map[string]any{"verify": false})
	a.creds("creds")
	if v := scrape(t, a).value(t, "adobe_ims_shared_reads_total"); v != 1 {
		t.Errorf("mount a: %v shared reads, want 1", v)
	}
	fb := scrape(t, b)
	if v := fb.value(t, "adobe_ims_shared_reads_total"); v != 0 {
		t.Errorf("mount b: %v shared reads, want 0", v)
	}
	if n := len(fb["adobe_ims_shared_token_expiry_timestamp_seconds"].GetMetric()); n != 0 {
		t.Errorf("mount b shows %d shared tokens, want none", n)
	}
	global, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, fam := range global {
		if strings.HasPrefix(fam.GetName(), "adobe_ims_") {
			t.Errorf("%s is in Prometheus' global registry", fam.GetName())
		}
	}
}

// TestCollectorsAreConsistent: what the collectors describe is what they
// collect (the pedantic registry checks every metric against its Desc), and
// scrapes run safely alongside reads and refreshes.
func TestCollectorsAreConsistent(t *testing.T) {
	x := exerciseEverything(t)
	e := x.e
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.b.metrics, stateCollector{b: e.b})
	if _, err := reg.Gather(); err != nil {
		t.Fatalf("pedantic gather: %v", err)
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 50 {
			if _, err := e.b.exposition(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for range 50 {
		e.creds("creds")
		e.b.metrics.observeAttempt(ims.Attempt{Op: ims.OpToken, Status: 200, Duration: time.Millisecond})
	}
	<-done
}

func TestAttemptEndpointAndOutcome(t *testing.T) {
	netErr := context.DeadlineExceeded
	for _, c := range []struct {
		a                 ims.Attempt
		endpoint, outcome string
	}{
		{ims.Attempt{Op: ims.OpToken, Status: 200}, "token", "ok"},
		{ims.Attempt{Op: ims.OpToken, Status: 400}, "token", "client_error"},
		{ims.Attempt{Op: ims.OpToken, Status: 401}, "token", "client_error"},
		{ims.Attempt{Op: ims.OpToken, Status: 302}, "token", "client_error"},
		{ims.Attempt{Op: ims.OpToken, Status: 429}, "token", "throttled"},
		{ims.Attempt{Op: ims.OpToken, Status: 500}, "token", "server_error"},
		{ims.Attempt{Op: ims.OpToken, Status: 503}, "token", "server_error"},
		{ims.Attempt{Op: ims.OpToken, Err: netErr}, "token", "network"},
		{ims.Attempt{Op: ims.OpInvalidate, Status: 200}, "invalidate", "ok"},
		{ims.Attempt{Op: ims.OpListSecrets, Status: 200}, "management", "ok"},
		{ims.Attempt{Op: ims.OpCreateSecret, Status: 201}, "management", "ok"},
		{ims.Attempt{Op: ims.OpDeleteSecret, Status: 504}, "management", "server_error"},
	} {
		if e, o := imsEndpoints[attemptEndpoint(c.a.Op)], imsOutcomes[attemptOutcome(c.a)]; e != c.endpoint || o != c.outcome {
			t.Errorf("%+v: endpoint %s outcome %s, want %s %s", c.a, e, o, c.endpoint, c.outcome)
		}
	}
}

// TestCountingAllocatesNothing: the read path's counters and an attempt's
// observation cost no allocation.
func TestCountingAllocatesNothing(t *testing.T) {
	m := &metrics{}
	a := ims.Attempt{Op: ims.OpToken, Status: 200, Duration: 120 * time.Millisecond}
	m.observeAttempt(a)
	if n := testing.AllocsPerRun(1000, func() {
		m.countSharedRead(true)
		m.observeAttempt(a)
	}); n != 0 {
		t.Errorf("%v allocations per counted read and attempt, want 0", n)
	}
}

func TestScopeSetLabelsAreBounded(t *testing.T) {
	var scopes []string
	for i := range 60 {
		scopes = append(scopes, fmt.Sprintf("scope_number_%d", i))
	}
	long := tokencache.Key(scopes)
	longer := long + ",zzz"
	a, b := scopeSetLabels(long), scopeSetLabels(longer)
	for _, l := range [][2]string{a, b} {
		if len(l[0]) != 12 || len(l[1]) > maxScopesLabel || !strings.HasSuffix(l[1], "...") {
			t.Errorf("labels %q are not bounded", l)
		}
	}
	if a[0] == b[0] {
		t.Error("two scope sets share a scope_set label")
	}
	if s := scopeSetLabels("openid,AdobeID"); s[1] != "openid,AdobeID" {
		t.Errorf("a short scope set is labelled %q", s[1])
	}
}

var (
	metricRef   = regexp.MustCompile(`adobe_ims_[a-zA-Z0-9_]+`)
	selectorRef = regexp.MustCompile(`(adobe_ims_[a-zA-Z0-9_]+|\bup)\s*\{([^}]*)\}`)
	matcherRef  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"`)
	groupingRef = regexp.MustCompile(`\b(?:by|on|without|ignoring)\s*\(([^)]*)\)`)
	templateRef = regexp.MustCompile(`\{\{\s*\.?([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}|\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)
)

// checkQueries fails for every metric, label or label value named in text
// that the exposition does not have. Prometheus adds job and instance.
func checkQueries(t *testing.T, where, text string, f families) {
	t.Helper()
	allLabels := map[string]bool{"job": true, "instance": true, "le": true}
	labelsOf := map[string]map[string]map[string]bool{} // family -> label -> values
	for name, fam := range f {
		labelsOf[name] = map[string]map[string]bool{}
		for _, m := range fam.GetMetric() {
			for _, l := range m.GetLabel() {
				if labelsOf[name][l.GetName()] == nil {
					labelsOf[name][l.GetName()] = map[string]bool{}
				}
				labelsOf[name][l.GetName()][l.GetValue()] = true
				allLabels[l.GetName()] = true
			}
		}
	}
	family := func(ref string) (string, bool) {
		if f[ref] != nil {
			return ref, true
		}
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			base := strings.TrimSuffix(ref, suffix)
			if fam := f[base]; base != ref && fam != nil && fam.GetType() == dto.MetricType_HISTOGRAM {
				return base, true
			}
		}
		return "", false
	}
	refs := metricRef.FindAllString(text, -1)
	if len(refs) == 0 {
		t.Errorf("%s names no adobe_ims_ metric", where)
	}
	for _, ref := range refs {
		if _, ok := family(ref); !ok {
			t.Errorf("%s uses %s, which the plugin does not export", where, ref)
		}
	}
	for _, sel := range selectorRef.FindAllStringSubmatch(text, -1) {
		if sel[1] == "up" {
			continue
		}
		base, _ := family(sel[1])
		for _, m := range matcherRef.FindAllStringSubmatch(sel[2], -1) {
			name, op, value := m[1], m[2], m[3]
			if name == "job" || name == "instance" || (name == "le" && strings.HasSuffix(sel[1], "_bucket")) {
				continue
			}
			values, ok := labelsOf[base][name]
			if !ok {
				t.Errorf("%s selects %s by label %s, which it does not have", where, sel[1], name)
				continue
			}
			if op == "=" || (op == "=~" && regexp.MustCompile(`^[a-z_|]+$`).MatchString(value)) {
				for _, v := range strings.Split(value, "|") {
					if !values[v] {
						t.Errorf("%s selects %s{%s=%q}, a value it never has", where, sel[1], name, v)
					}
				}
			}
		}
	}
	for _, g := range groupingRef.FindAllStringSubmatch(text, -1) {
		for _, l := range strings.Split(g[1], ",") {
			if l = strings.TrimSpace(l); l != "" && !allLabels[l] {
				t.Errorf("%s groups by %s, a label no metric has", where, l)
			}
		}
	}
	for _, m := range templateRef.FindAllStringSubmatch(text, -1) {
		l := m[1] + m[2]
		if !allLabels[l] && l != "value" {
			t.Errorf("%s shows label %s, which no metric has", where, l)
		}
	}
}

// TestDashboardAndAlertsUseOnlyExportedMetrics reads the Grafana dashboard
// and the alert rules and checks every metric, label and label value they
// use against the exposition of an exercised mount.
func TestDashboardAndAlertsUseOnlyExportedMetrics(t *testing.T) {
	f := exerciseEverything(t).fams

	t.Run("dashboard", func(t *testing.T) {
		b, err := os.ReadFile("docs/grafana-dashboard.json")
		if err != nil {
			t.Fatal(err)
		}
		var dash struct {
			Title  string `json:"title"`
			Panels []struct {
				Type    string `json:"type"`
				Title   string `json:"title"`
				Targets []struct {
					Expr         string `json:"expr"`
					LegendFormat string `json:"legendFormat"`
				} `json:"targets"`
			} `json:"panels"`
			Templating struct {
				List []struct {
					Name       string `json:"name"`
					Definition string `json:"definition"`
				} `json:"list"`
			} `json:"templating"`
		}
		if err := json.Unmarshal(b, &dash); err != nil {
			t.Fatalf("docs/grafana-dashboard.json is not valid JSON: %v", err)
		}
		graphs := 0
		for _, p := range dash.Panels {
			if p.Type == "row" {
				continue
			}
			graphs++
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, q := range p.Targets {
				if q.Expr == "" {
					t.Errorf("panel %q has an empty query", p.Title)
					continue
				}
				checkQueries(t, "panel "+p.Title, q.Expr+"\n"+q.LegendFormat, f)
			}
		}
		for _, v := range dash.Templating.List {
			if v.Definition != "" {
				checkQueries(t, "variable "+v.Name, v.Definition, f)
			}
		}
		if graphs < 10 {
			t.Errorf("the dashboard has %d panels", graphs)
		}
		// Every metric the plugin exports is on the dashboard.
		for name := range f {
			if !strings.Contains(string(b), name) {
				t.Errorf("the dashboard does not show %s", name)
			}
		}
	})

	t.Run("alerts", func(t *testing.T) {
		b, err := os.ReadFile("docs/alerts.yml")
		if err != nil {
			t.Fatal(err)
		}
		var rules struct {
			Groups []struct {
				Name  string `yaml:"name"`
				Rules []struct {
					Alert       string            `yaml:"alert"`
					Expr        string            `yaml:"expr"`
					For         string            `yaml:"for"`
					Labels      map[string]string `yaml:"labels"`
					Annotations map[string]string `yaml:"annotations"`
				} `yaml:"rules"`
			} `yaml:"groups"`
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		dec.KnownFields(true)
		if err := dec.Decode(&rules); err != nil {
			t.Fatalf("docs/alerts.yml is not a rule file: %v", err)
		}
		uses := map[string]string{} // alert -> expr
		for _, g := range rules.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" || r.Expr == "" {
					t.Errorf("group %s has a rule without alert or expr", g.Name)
					continue
				}
				if s := r.Labels["severity"]; s != "critical" && s != "warning" {
					t.Errorf("%s: severity %q", r.Alert, s)
				}
				if len(r.Annotations["summary"]) < 30 || len(r.Annotations["description"]) < 80 {
					t.Errorf("%s: an on-call engineer needs a summary and a description of what to do", r.Alert)
				}
				if r.For != "" {
					if _, err := model.ParseDuration(r.For); err != nil {
						t.Errorf("%s: for %q: %v", r.Alert, r.For, err)
					}
				}
				uses[r.Alert] = r.Expr
				if strings.Contains(r.Expr, "adobe_ims_") {
					checkQueries(t, "alert "+r.Alert, r.Expr+"\n"+r.Annotations["summary"]+"\n"+r.Annotations["description"], f)
				}
			}
		}
		// The four situations each have an alert.
		for what, needs := range map[string][]string{
			"refresh failing while the token nears its end": {"adobe_ims_shared_token_refresh_failures", "adobe_ims_shared_token_safe_end_timestamp_seconds"},
			"IMS throttling":   {"adobe_ims_throttled_until_timestamp_seconds"},
			"IMS error rate":   {"adobe_ims_request_duration_seconds_count", "server_error"},
			"rotation failing": {"adobe_ims_rotation_consecutive_failures"},
			"rotation overdue": {"adobe_ims_rotation_next_timestamp_seconds", "time()"},
		} {
			found := false
			for _, expr := range uses {
				all := true
				for _, n := range needs {
					all = all && strings.Contains(expr, n)
				}
				found = found || all
			}
			if !found {
				t.Errorf("no alert for %s (an expression using %v)", what, needs)
			}
		}
	})
}

// TestMonitoringDocScrapeJob: the documented scrape job reads the metrics
// path with a Vault token from a file, as Prometheus' authorization block.
func TestMonitoringDocScrapeJob(t *testing.T) {
	b, err := os.ReadFile("docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	start := strings.Index(doc, "```yaml\nscrape_configs:")
	if start < 0 {
		t.Fatal("docs/monitoring.md has no scrape_configs block")
	}
	block := doc[start+len("```yaml\n"):]
	block = block[:strings.Index(block, "```")]
	var cfg struct {
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			Authorization struct {
				Type            string `yaml:"type"`
				CredentialsFile string `yaml:"credentials_file"`
			} `yaml:"authorization"`
			BearerTokenFile string `yaml:"bearer_token_file"`
		} `yaml:"scrape_configs"`
	}
	if err := yaml.Unmarshal([]byte(block), &cfg); err != nil || len(cfg.ScrapeConfigs) != 1 {
		t.Fatalf("scrape config: %v %+v", err, cfg)
	}
	sc := cfg.ScrapeConfigs[0]
	if sc.JobName != "vault-adobe-ims" || sc.MetricsPath != "/v1/adobe/metrics" ||
		sc.Authorization.Type != "Bearer" || sc.Authorization.CredentialsFile == "" || sc.BearerTokenFile != "" {
		t.Errorf("scrape job %+v", sc)
	}
	if !strings.Contains(doc, "path \"adobe/metrics\" {\n  capabilities = [\"read\"]\n}") {
		t.Error("docs/monitoring.md does not give the least-privilege policy")
	}
}
