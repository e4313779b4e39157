package adobeims

import (
	"context"
	"fmt"

	"github.com/hashicorp/vault/sdk/logical"
)

// getJSON reads the JSON entry at key into a new T, or returns nil when
// there is none. what names the entry in errors.
func getJSON[T any](ctx context.Context, s logical.Storage, key, what string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("reading the %s from storage: %w", what, err)
	}
	if entry == nil {
		return nil, nil
	}
	v := new(T)
	if err := entry.DecodeJSON(v); err != nil {
		return nil, fmt.Errorf("decoding the stored %s: %w", what, err)
	}
	return v, nil
}
