package adobeims

import (
	"context"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// walRollbackMinAge is how old a rotation's write-ahead log entry must be
// before Vault rolls it back: longer than any rotation takes.
const walRollbackMinAge = 10 * time.Minute

func pathRotate(b *backend) []*framework.Path { return nil }

func (b *backend) rotateIfDue(ctx context.Context, s logical.Storage) error { return nil }

func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data any) error {
	return nil
}
