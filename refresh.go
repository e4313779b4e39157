package adobeims

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// refreshSharedTokens replaces shared tokens past their refresh point before
// any reader needs them, so reads do not wait on IMS while a valid token
// exists. It only touches tokens that were read during their life: a scope
// set nobody reads is left to expire. After a failure a scope set waits
// before its next attempt (5 seconds, doubling up to 5 minutes) while its
// current token keeps being served until its safe end.
func (b *backend) refreshSharedTokens(ctx context.Context, s logical.Storage) error {
	conn, err := b.connection(ctx, s)
	if err != nil || conn == nil {
		return err
	}
	n, err := b.cache.Refresh(ctx)
	if n > 0 {
		b.metrics.backgroundRefreshes.Add(uint64(n))
		b.logger("refresh").Debug("replaced shared tokens ahead of their expiry", "count", n)
	}
	if err != nil {
		b.logger("refresh").Warn("replacing shared tokens failed; the current tokens are served until their safe end", "error", err)
		return fmt.Errorf("refreshing shared tokens: %w", err)
	}
	return nil
}
