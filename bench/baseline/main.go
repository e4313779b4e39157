// Command baseline is a Vault secrets plugin that exists only for
// bench/loadbench: the floor that the Adobe IMS plugin is measured against.
// Its "creds" read returns a constant leased secret with a 1-hour TTL, shaped
// like an Adobe IMS creds response (the same fields, a token of the same
// size), and its renew and revoke do nothing. What it costs is what Vault, the
// plugin gRPC channel and the SDK's framework cost for any leased read.
package main

import (
	"context"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/plugin"
)

// version is set at build time with -ldflags "-X main.version=v0.1.0";
// Vault requires a registered version to match it.
var version = "v0.0.0-dev"

const secretType = "baseline_token"

// token is as long as the emulator's IMS tokens (a JWT with a 256-byte
// signature), so that both plugins send Vault responses of the same size.
var token = "eyJhbGciOiJSUzI1NiJ9." + strings.Repeat("A", 250) + "." + strings.Repeat("B", 342)

func main() {
	meta := &api.PluginAPIClientMeta{}
	if err := meta.FlagSet().Parse(os.Args[1:]); err != nil {
		fatal(err)
	}
	err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: factory,
		TLSProviderFunc:    api.VaultPluginTLSProvider(meta.GetTLSConfig()),
	})
	if err != nil {
		fatal(err)
	}
}

func factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := &framework.Backend{
		Help:           "A constant leased secret, for benchmarks.",
		BackendType:    logical.TypeLogical,
		RunningVersion: version,
		Secrets: []*framework.Secret{{
			Type: secretType,
			Renew: func(_ context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
				return &logical.Response{Secret: req.Secret}, nil
			},
			Revoke: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
				return nil, nil
			},
		}},
	}
	expiresAt := time.Now().Add(24 * time.Hour).UTC()
	b.Paths = []*framework.Path{{
		Pattern: "creds/?$",
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: func(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
					resp := b.Secret(secretType).Response(map[string]any{
						"access_token": token,
						"token_type":   "bearer",
						"expires_at":   expiresAt.Format(time.RFC3339),
						"scopes":       []string{"openid", "firefly_api"},
						// loadbench's client ID: creds returns it too (for x-api-key).
						"client_id": "loadbench-client-id",
					}, map[string]any{
						"scopes":     "openid,firefly_api",
						"expires_at": expiresAt.Format(time.RFC3339Nano),
					})
					resp.Secret.TTL = time.Hour
					return resp, nil
				},
			},
		},
	}}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}
