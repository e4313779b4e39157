package tokencache

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// benchScopes is a realistic Firefly scope set, deliberately not sorted, as
// an operator types it into the config.
var benchScopes = []string{"openid", "AdobeID", "session", "additional_info", "read_organizations", "firefly_api", "ff_apis"}

// newBenchCache returns a cache on the real clock whose mint answers at once
// with 24-hour tokens, as Adobe's are.
func newBenchCache(b *testing.B, mint MintFunc) *Cache {
	b.Helper()
	if mint == nil {
		mint = instantMint
	}
	c := New(mint, Options{})
	b.Cleanup(c.Close)
	return c
}

func instantMint(_ context.Context, scopes []string) (*Token, error) {
	now := time.Now()
	return &Token{AccessToken: "token", TokenType: "bearer", Scopes: scopes, MintedAt: now, ExpiresAt: now.Add(24 * time.Hour)}, nil
}

// hit reads scopes and reports, without stopping the benchmark (it may run
// in a RunParallel goroutine), when that was not a cache hit.
func hit(b *testing.B, c *Cache, scopes []string) bool {
	res, err := c.Get(context.Background(), scopes)
	if err != nil || !res.Hit {
		b.Errorf("scopes %v: want a cache hit, got hit=%v err=%v", scopes, res.Hit, err)
		return false
	}
	return true
}

// BenchmarkGetHit is the shared read's cache lookup: a fresh token is cached.
func BenchmarkGetHit(b *testing.B) {
	for _, tc := range []struct {
		name   string
		scopes []string
	}{
		{"one-scope", []string{"openid"}},
		{"seven-scopes-sorted", []string{"AdobeID", "additional_info", "ff_apis", "firefly_api", "openid", "read_organizations", "session"}},
		{"seven-scopes-unsorted", benchScopes},
	} {
		b.Run(tc.name, func(b *testing.B) {
			c := newBenchCache(b, nil)
			if _, err := c.Get(context.Background(), tc.scopes); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if !hit(b, c, tc.scopes) {
					return
				}
			}
		})
	}
}

// BenchmarkGetHitParallel reads 8 cached scope sets from every core while a
// ninth scope set's mint is stuck at IMS. A hit must not wait on another
// key's IMS request: if it did, this benchmark would never finish.
func BenchmarkGetHitParallel(b *testing.B) {
	const warm = 8
	sets := make([][]string, warm)
	for i := range sets {
		sets[i] = append([]string{fmt.Sprintf("scope_%d", i)}, benchScopes...)
	}
	blocked := []string{"blocked_scope", "openid"}
	blockedKey := Key(blocked)

	mintStarted := make(chan struct{})
	release := make(chan struct{})
	c := newBenchCache(b, func(ctx context.Context, scopes []string) (*Token, error) {
		if Key(scopes) == blockedKey {
			close(mintStarted)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return instantMint(ctx, scopes)
	})
	for _, s := range sets {
		if _, err := c.Get(context.Background(), s); err != nil {
			b.Fatal(err)
		}
	}

	var blockedDone atomic.Bool
	done := make(chan error, 1)
	go func() {
		_, err := c.Get(context.Background(), blocked)
		blockedDone.Store(true)
		done <- err
	}()
	<-mintStarted

	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(1) // each goroutine starts on a different scope set
		for pb.Next() {
			if !hit(b, c, sets[i%warm]) {
				return
			}
			i++
		}
	})
	b.StopTimer()

	if blockedDone.Load() {
		b.Fatal("the blocked scope set's read finished before its mint was released")
	}
	close(release)
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}
