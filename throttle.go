package adobeims

import "time"

// throttledUntil is when the plugin may ask IMS for tokens again after IMS
// throttled this credential; zero when it is not throttled.
func (b *backend) throttledUntil() time.Time {
	return time.Time{}
}
