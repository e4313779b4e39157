package adobeims

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// metrics are the plugin's counters since it started, and the latency of
// its calls to Adobe. They live on the backend (one set and one Prometheus
// registry per mount), never in package state: the plugin is multiplexed,
// one process serving every mount, so a global registry would mix mounts.
//
// The counters are plain atomics, exported by a collector at scrape time,
// so that the read path (a shared read served from the cache) costs two
// atomic adds and nothing else. The zero value is ready for use.
type metrics struct {
	imsTokenRequests     atomic.Uint64
	imsTokenFailures     atomic.Uint64
	imsAttempts          atomic.Uint64
	imsRetries           atomic.Uint64
	sharedReads          atomic.Uint64
	cacheHits            atomic.Uint64
	dedicatedMints       atomic.Uint64
	invalidations        atomic.Uint64
	invalidationFailures atomic.Uint64
	backgroundRefreshes  atomic.Uint64
	// rotationFailures counts automatic rotations (the plugin's scheduler
	// or Vault's rotation manager) that failed on this node.
	rotationFailures atomic.Uint64

	// durations is made on first use (an IMS attempt or a scrape), with one
	// observer per endpoint and outcome, so that every series exists from
	// the first scrape and an attempt costs no label lookup.
	durationsOnce sync.Once
	durations     *prometheus.HistogramVec
	observers     [len(imsEndpoints)][len(imsOutcomes)]prometheus.Observer

	// registry is the mount's own, made on the first scrape.
	registryOnce sync.Once
	registry     *prometheus.Registry
}

type counter struct {
	name, key, help string
	value           uint64
}

// counters lists every counter with its Prometheus name, its key in the info
// response, and its help text.
func (m *metrics) counters() []counter {
	c := func(name, key, help string, v *atomic.Uint64) counter {
		return counter{name: "adobe_ims_" + name + "_total", key: key, help: help, value: v.Load()}
	}
	return []counter{
		c("token_requests", "ims_token_requests", "Token requests made to Adobe IMS, retries counted once.", &m.imsTokenRequests),
		c("token_failures", "ims_token_failures", "Token requests to Adobe IMS that failed after retries.", &m.imsTokenFailures),
		c("http_attempts", "ims_http_attempts", "HTTP attempts to Adobe IMS and the I/O Management API, retries included.", &m.imsAttempts),
		c("http_retries", "ims_http_retries", "HTTP attempts that were followed by a retry.", &m.imsRetries),
		c("shared_reads", "shared_reads", "Reads of creds in shared mode.", &m.sharedReads),
		c("cache_hits", "cache_hits", "Shared reads served from the cache without waiting on IMS.", &m.cacheHits),
		c("dedicated_mints", "dedicated_mints", "Reads of creds in dedicated mode, each minting a token.", &m.dedicatedMints),
		c("invalidations", "invalidations", "Dedicated tokens sent to IMS for invalidation on lease revocation.", &m.invalidations),
		c("invalidation_failures", "invalidation_failures", "Invalidations that failed.", &m.invalidationFailures),
		c("background_refreshes", "background_refreshes", "Shared tokens replaced ahead of expiry by the periodic refresh.", &m.backgroundRefreshes),
	}
}

func (m *metrics) snapshot() map[string]any {
	out := map[string]any{}
	for _, c := range m.counters() {
		out[c.key] = c.value
	}
	return out
}

func (m *metrics) observeAttempt(a ims.Attempt) {
	m.imsAttempts.Add(1)
	if a.Retrying {
		m.imsRetries.Add(1)
	}
	m.initDurations()
	m.observers[attemptEndpoint(a.Op)][attemptOutcome(a)].Observe(a.Duration.Seconds())
}

func (m *metrics) countSharedRead(hit bool) {
	m.sharedReads.Add(1)
	if hit {
		m.cacheHits.Add(1)
	}
}

// The endpoint and outcome labels of adobe_ims_request_duration_seconds.
var (
	imsEndpoints = [...]string{"token", "invalidate", "management"}
	imsOutcomes  = [...]string{"ok", "client_error", "server_error", "throttled", "network"}
)

const (
	endpointToken = iota
	endpointInvalidate
	endpointManagement
)

const (
	outcomeOK = iota
	outcomeClientError
	outcomeServerError
	outcomeThrottled
	outcomeNetwork
)

// attemptEndpoint is the endpoint label of an attempt: token minting (for
// readers and for rotation's own management token), invalidation, or the
// I/O Management API (listing, creating and deleting client secrets).
func attemptEndpoint(op string) int {
	switch op {
	case ims.OpToken:
		return endpointToken
	case ims.OpInvalidate:
		return endpointInvalidate
	}
	return endpointManagement
}

// attemptOutcome is the outcome label of an attempt: no HTTP answer at all
// (refused, reset, timed out, TLS) is network; 429 is throttled; other 5xx
// are server errors; 2xx is ok; anything else (4xx, an unexpected redirect)
// is a client error, a request IMS refused.
func attemptOutcome(a ims.Attempt) int {
	switch {
	case a.Status == 0:
		return outcomeNetwork
	case a.Status == 429:
		return outcomeThrottled
	case a.Status >= 500:
		return outcomeServerError
	case a.Status >= 200 && a.Status < 300:
		return outcomeOK
	}
	return outcomeClientError
}

// durationBuckets cover IMS answering in tens of milliseconds up to an
// attempt's 10-second timeout.
var durationBuckets = []float64{0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

func (m *metrics) initDurations() {
	m.durationsOnce.Do(func() {
		m.durations = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "adobe_ims_request_duration_seconds",
			Help:    "Duration of HTTP attempts to Adobe IMS and the I/O Management API, to the response headers or the failure, by endpoint (token, invalidate, management) and outcome (ok, client_error, server_error, throttled, network).",
			Buckets: durationBuckets,
		}, []string{"endpoint", "outcome"})
		for e, endpoint := range imsEndpoints {
			for o, outcome := range imsOutcomes {
				m.observers[e][o] = m.durations.WithLabelValues(endpoint, outcome)
			}
		}
	})
}

// Descriptions of what the collectors export at scrape time.
var (
	counterDescs = func() map[string]*prometheus.Desc {
		out := map[string]*prometheus.Desc{}
		for _, c := range (&metrics{}).counters() {
			out[c.name] = prometheus.NewDesc(c.name, c.help, nil, nil)
		}
		return out
	}()
	rotationFailuresDesc = prometheus.NewDesc("adobe_ims_rotation_failures_total",
		"Automatic rotations of the client secret (by the plugin's scheduler or Vault's rotation manager) that failed on this node since the plugin started.", nil, nil)
	buildInfoDesc = prometheus.NewDesc("adobe_ims_build_info",
		"Always 1; the plugin's version is in the version label.", []string{"version"}, nil)
	throttledUntilDesc = prometheus.NewDesc("adobe_ims_throttled_until_timestamp_seconds",
		"Unix time until which IMS throttles this credential and no token request is sent; 0 when not throttled.", nil, nil)

	tokenLabels      = []string{"scope_set", "scopes"}
	tokenExpiresDesc = prometheus.NewDesc("adobe_ims_shared_token_expiry_timestamp_seconds",
		"Unix time the shared token of a scope set expires at IMS.", tokenLabels, nil)
	tokenSafeEndDesc = prometheus.NewDesc("adobe_ims_shared_token_safe_end_timestamp_seconds",
		"Unix time after which the shared token of a scope set is no longer handed out: readers then wait for IMS.", tokenLabels, nil)
	tokenRefreshDesc = prometheus.NewDesc("adobe_ims_shared_token_refresh_timestamp_seconds",
		"Unix time the shared token of a scope set is due to be replaced in the background (if it was read during its life).", tokenLabels, nil)
	tokenFailuresDesc = prometheus.NewDesc("adobe_ims_shared_token_refresh_failures",
		"Consecutive failed attempts to mint a token for a scope set since its last success; 0 when the last one succeeded.", tokenLabels, nil)

	rotationLastDesc = prometheus.NewDesc("adobe_ims_rotation_last_success_timestamp_seconds",
		"Unix time of the last successful rotation of the client secret; 0 if Vault never rotated it.", nil, nil)
	rotationNextDesc = prometheus.NewDesc("adobe_ims_rotation_next_timestamp_seconds",
		"Unix time the client secret is due to be rotated next, back-off after failures included; 0 when automated rotation is off.", nil, nil)
	rotationConsecutiveDesc = prometheus.NewDesc("adobe_ims_rotation_consecutive_failures",
		"Automatic rotations that failed in a row since the last success, as recorded in Vault storage (cluster-wide, survives restarts).", nil, nil)
)

// Describe and Collect export the counters and the latency histogram.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range counterDescs {
		ch <- d
	}
	ch <- rotationFailuresDesc
	m.initDurations()
	m.durations.Describe(ch)
}

func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.counters() {
		ch <- prometheus.MustNewConstMetric(counterDescs[c.name], prometheus.CounterValue, float64(c.value))
	}
	ch <- prometheus.MustNewConstMetric(rotationFailuresDesc, prometheus.CounterValue, float64(m.rotationFailures.Load()))
	m.initDurations()
	m.durations.Collect(ch)
}

// stateCollector exports, at scrape time, what the backend knows now: the
// shared tokens' times, IMS throttling and the rotation schedule. It reads
// memory, and two small storage entries (the config, usually cached, and
// the rotation status).
type stateCollector struct{ b *backend }

// scrapeStorageTimeout bounds the storage reads of one scrape.
const scrapeStorageTimeout = 5 * time.Second

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		buildInfoDesc, throttledUntilDesc,
		tokenExpiresDesc, tokenSafeEndDesc, tokenRefreshDesc, tokenFailuresDesc,
		rotationLastDesc, rotationNextDesc, rotationConsecutiveDesc,
	} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	b := c.b
	now := b.opts.now()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(buildInfoDesc, 1, Version)

	var throttled float64
	if until := b.throttledUntil(); until.After(now) {
		throttled = unixSeconds(until)
	}
	gauge(throttledUntilDesc, throttled)

	for _, s := range b.cache.States() {
		labels := scopeSetLabels(s.Scopes)
		if !s.ExpiresAt.IsZero() {
			gauge(tokenExpiresDesc, unixSeconds(s.ExpiresAt), labels[:]...)
			gauge(tokenSafeEndDesc, unixSeconds(s.SafeEnd), labels[:]...)
			gauge(tokenRefreshDesc, unixSeconds(s.RefreshAt), labels[:]...)
		}
		gauge(tokenFailuresDesc, float64(s.Failures), labels[:]...)
	}

	if b.storage == nil {
		return // not set up: no mount, so no config
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeStorageTimeout)
	defer cancel()
	conn, err := b.connection(ctx, b.storage)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(rotationLastDesc, err)
		return
	}
	if conn == nil {
		return // not configured: nothing to rotate
	}
	st, err := getRotationStatus(ctx, b.storage)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(rotationConsecutiveDesc, err)
		return
	}
	gauge(rotationLastDesc, unixSeconds(conn.config.LastRotation))
	gauge(rotationNextDesc, unixSeconds(nextRotation(conn.config, st, now)))
	gauge(rotationConsecutiveDesc, float64(st.Failures))
}

// unixSeconds is t as a Prometheus timestamp value; 0 for the zero time.
func unixSeconds(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}
	return float64(t.UnixNano()) / 1e9
}

// maxScopesLabel bounds the scopes label; scope_set tells apart scope sets
// whose labels were cut to the same text.
const maxScopesLabel = 120

// scopeSetLabels are the labels of a shared token: scope_set, a short hash
// of its scope set's key (sorted, comma-joined scopes), and scopes, the key
// itself cut to maxScopesLabel bytes. Never the token.
func scopeSetLabels(key string) [2]string {
	sum := sha256.Sum256([]byte(key))
	scopes := key
	if len(scopes) > maxScopesLabel {
		scopes = strings.ToValidUTF8(scopes[:maxScopesLabel-3], "") + "..."
	}
	return [2]string{hex.EncodeToString(sum[:6]), scopes}
}

// prometheusRegistry is the mount's registry, made on first use.
func (b *backend) prometheusRegistry() *prometheus.Registry {
	m := b.metrics
	m.registryOnce.Do(func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(m, stateCollector{b: b})
		m.registry = reg
	})
	return m.registry
}

// metricsContentType is the Prometheus text exposition format, version 0.0.4.
var metricsContentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// exposition gathers the mount's metrics in the Prometheus text format.
func (b *backend) exposition() ([]byte, error) {
	families, err := b.prometheusRegistry().Gather()
	if err != nil {
		return nil, fmt.Errorf("gathering metrics: %w", err)
	}
	var buf bytes.Buffer
	enc := expfmt.NewEncoder(&buf, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			return nil, fmt.Errorf("encoding metric %s: %w", f.GetName(), err)
		}
	}
	return buf.Bytes(), nil
}
