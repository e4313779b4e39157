package adobeims

import (
	"sync/atomic"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
)

// metrics are the plugin's counters since it started. They live on the
// backend (one set per mount), never in package state.
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
}

func (m *metrics) countSharedRead(hit bool) {
	m.sharedReads.Add(1)
	if hit {
		m.cacheHits.Add(1)
	}
}
