package adobeims

import (
	"errors"
	"net/http"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsgate"
)

// keyThrottledUntil is how info shows throttledUntil.
const keyThrottledUntil = "throttled_until"

// throttledUntil is when the plugin may ask IMS for tokens again after IMS
// throttled this credential; zero when it is not throttled.
func (b *backend) throttledUntil() time.Time {
	return b.gate.ThrottledUntil()
}

// throttleResponse answers a request that IMS's throttling, or the cap on
// parallel IMS calls, kept from a token: 429 while IMS throttles the
// credential (the message names when the plugin tries again), 503 when no
// slot freed up in time. Both are worth retrying later; other errors give nil.
func throttleResponse(msg string, err error) (*logical.Response, error) {
	var throttled *imsgate.ThrottledError
	var busy *imsgate.BusyError
	switch {
	case errors.As(err, &throttled):
		return nil, logical.CodedError(http.StatusTooManyRequests, msg)
	case errors.As(err, &busy):
		return nil, logical.CodedError(http.StatusServiceUnavailable, msg)
	}
	return nil, nil
}
