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
