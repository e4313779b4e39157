package adobeims

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// throttleStorageKey holds the throttle window IMS last set for the
// credential, so that a restarted node, a reloaded plugin or a new leader
// sends nothing before IMS allows it, instead of learning the window again
// with a request of its own.
const throttleStorageKey = "throttle"

// saveThrottleTimeout bounds the write of a throttle window. It runs inside
// a failing IMS call, whose own context the gate does not pass on.
const saveThrottleTimeout = 5 * time.Second

// persistedThrottle is a throttle window and the credential it applies to:
// IMS throttles a client at a host, so a window of another client or IMS
// means nothing for this one.
type persistedThrottle struct {
	ClientID string    `json:"client_id"`
	IMSURL   string    `json:"ims_url"`
	Until    time.Time `json:"until"`
}

// saveThrottle is the gate's OnThrottle: it stores the window's end for the
// credential the node mints with, unless that changed since IMS throttled
// the credential of epoch (the gate's epoch and the connection change
// together, under b.mu). Only where storage may be written; a failure costs
// one request after a restart, so it is logged and no more.
func (b *backend) saveThrottle(epoch uint64, until time.Time) {
	b.mu.RLock()
	c, current := b.conn, b.gate.Epoch()
	b.mu.RUnlock()
	if c == nil || epoch != current || b.storage == nil || !b.mayWriteStorage() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), saveThrottleTimeout)
	defer cancel()
	entry, err := logical.StorageEntryJSON(throttleStorageKey, &persistedThrottle{
		ClientID: c.config.ClientID, IMSURL: c.config.IMSURL, Until: until.UTC(),
	})
	if err == nil {
		err = b.storage.Put(ctx, entry)
	}
	if err != nil {
		b.logger("ims").Warn("could not store the throttle window; after a restart the plugin asks IMS once before it knows of it",
			"throttled_until", until.UTC().Format(time.RFC3339), "error", err)
	}
}

// restoreThrottle makes the gate respect a stored window of cfg's
// credential that has not ended.
func (b *backend) restoreThrottle(ctx context.Context, s logical.Storage, cfg *config) {
	p, err := getThrottle(ctx, s)
	if err != nil {
		b.logger("ims").Warn("could not read the stored throttle window; IMS is asked as if there were none", "error", err)
		return
	}
	if p != nil && p.ClientID == cfg.ClientID && p.IMSURL == cfg.IMSURL {
		b.gate.Restore(p.Until)
	}
}

func getThrottle(ctx context.Context, s logical.Storage) (*persistedThrottle, error) {
	return getJSON[persistedThrottle](ctx, s, throttleStorageKey, "throttle window")
}
