package adobeims

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/ims"
	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// The benchmarks below time the read path inside the plugin process, from
// HandleRequest to the lease response, without Vault's HTTP and gRPC layers
// (bench/loadbench measures those). The IMS emulator answers at once, so the
// IMS figures are the client's and the loopback's own cost.

// benchEnv is a configured backend on the real clock, with a shared role, a
// dedicated role and an instant IMS emulator. Unlike testEnv it does not
// scan responses and logs for secrets: that would dominate the timings.
type benchEnv struct {
	b       *backend
	storage logical.Storage
	emu     *imsemu.Emulator
}

func newBenchEnv(tb testing.TB) *benchEnv {
	tb.Helper()
	emu := newTestEmulator()
	srv := httptest.NewServer(emu)
	tb.Cleanup(srv.Close)

	conf := logical.TestBackendConfig()
	conf.StorageView = &logical.InmemStorage{}
	conf.Logger = hclog.NewNullLogger()
	b := newBackend(backendOptions{
		imsOptions: ims.Options{
			RetryMax: 2, RetryWaitMin: time.Millisecond, RetryWaitMax: 5 * time.Millisecond,
			MaxElapsed: 5 * time.Second, AttemptTimeout: 2 * time.Second,
		},
	})
	if err := b.Setup(context.Background(), conf); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { b.Clean(context.Background()) })
	e := &benchEnv{b: b, storage: conf.StorageView, emu: emu}

	e.write(tb, "config", map[string]any{
		"client_id": testClientID, "client_secret": testClientSecret,
		"scopes": testScopes, "ims_url": srv.URL,
	})
	e.write(tb, "roles/shared", map[string]any{"scopes": "openid,firefly_api", "mode": modeShared})
	e.write(tb, "roles/dedicated", map[string]any{"scopes": "openid,firefly_api", "mode": modeDedicated})
	e.creds(tb, "creds/shared") // warm the role's shared token
	return e
}

func (e *benchEnv) write(tb testing.TB, path string, data map[string]any) {
	tb.Helper()
	req := &logical.Request{Operation: logical.UpdateOperation, Path: path, Data: data, Storage: e.storage}
	if _, exists, err := e.b.HandleExistenceCheck(context.Background(), req); err != nil {
		tb.Fatal(err)
	} else if !exists {
		req.Operation = logical.CreateOperation
	}
	if resp, err := e.b.HandleRequest(context.Background(), req); err != nil || resp.IsError() {
		tb.Fatalf("write %s: %v %v", path, err, resp.Error())
	}
}

// read returns the creds response at path; it only reports failures, so it
// is safe in RunParallel goroutines.
func (e *benchEnv) read(tb testing.TB, path string) *logical.Response {
	req := &logical.Request{Operation: logical.ReadOperation, Path: path, Storage: e.storage}
	resp, err := e.b.HandleRequest(context.Background(), req)
	if err != nil || resp == nil || resp.IsError() || resp.Secret == nil {
		tb.Errorf("read %s: want a lease, got %v %#v", path, err, resp)
		return nil
	}
	return resp
}

func (e *benchEnv) creds(tb testing.TB, path string) *logical.Response {
	tb.Helper()
	resp := e.read(tb, path)
	if resp == nil {
		tb.FailNow()
	}
	return resp
}

// imsTokenRequests is how many tokens the emulator was asked for so far.
func (e *benchEnv) imsTokenRequests() int { return e.emu.Stats().TokenRequests }

// reportIMS reports IMS token requests per read, the number a shared cache
// exists to keep near zero.
func (e *benchEnv) reportIMS(b *testing.B, before int) {
	b.ReportMetric(float64(e.imsTokenRequests()-before)/float64(b.N), "ims-req/op")
}

// BenchmarkCredsShared reads shared tokens: hits from the cache (the
// steady state), and misses that mint through the IMS client every time.
func BenchmarkCredsShared(b *testing.B) {
	for _, path := range []string{"creds", "creds/shared"} {
		b.Run("hit/"+path, func(b *testing.B) {
			e := newBenchEnv(b)
			e.creds(b, path)
			before := e.imsTokenRequests()
			b.ReportAllocs()
			for b.Loop() {
				if e.read(b, path) == nil {
					return
				}
			}
			e.reportIMS(b, before)
		})
	}
	b.Run("hit-parallel/creds/shared", func(b *testing.B) {
		e := newBenchEnv(b)
		before := e.imsTokenRequests()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if e.read(b, "creds/shared") == nil {
					return
				}
			}
		})
		e.reportIMS(b, before)
	})
	b.Run("miss/creds/shared", func(b *testing.B) {
		e := newBenchEnv(b)
		before := e.imsTokenRequests()
		b.ReportAllocs()
		for b.Loop() {
			e.b.cache.Purge() // every read finds no token and mints one
			if e.read(b, "creds/shared") == nil {
				return
			}
		}
		e.reportIMS(b, before)
	})
}

// BenchmarkCredsDedicated mints a token per read, as dedicated roles do.
// Leases are not revoked, so the emulator keeps every token.
func BenchmarkCredsDedicated(b *testing.B) {
	e := newBenchEnv(b)
	before := e.imsTokenRequests()
	b.ReportAllocs()
	for b.Loop() {
		if e.read(b, "creds/dedicated") == nil {
			return
		}
	}
	e.reportIMS(b, before)
}

// BenchmarkRenew renews a shared lease: no IMS call, one role lookup.
func BenchmarkRenew(b *testing.B) {
	for _, path := range []string{"creds", "creds/shared"} {
		b.Run(path, func(b *testing.B) {
			e := newBenchEnv(b)
			secret := e.creds(b, path).Secret
			secret.IssueTime = time.Now()
			before := e.imsTokenRequests()
			b.ReportAllocs()
			for b.Loop() {
				req := &logical.Request{Operation: logical.RenewOperation, Path: path, Secret: secret, Storage: e.storage}
				resp, err := e.b.HandleRequest(context.Background(), req)
				if err != nil || resp == nil || resp.IsError() || resp.Secret.TTL <= 0 {
					b.Fatalf("renew: want a positive TTL, got %v %#v", err, resp)
				}
			}
			e.reportIMS(b, before)
		})
	}
}
