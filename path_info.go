package adobeims

import (
	"context"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func pathInfo(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern:      "info",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathInfoRead,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "info"},
					Summary:      "Plugin version, IMS settings, shared token states and counters; never a token or secret.",
					Responses:    okResponse(infoFields()),
				},
			},
			HelpSynopsis: "What the engine is doing: version, IMS URL, shared tokens' state, counters.",
			HelpDescription: `Shows the plugin version, the IMS URL and client ID, and for each scope set
with a shared token on this node: when it was minted, when it expires, when it
will be replaced, when it was last read and the last refresh error. The token
itself is never shown. Counters are this node's since the plugin started.`,
		},
		{
			Pattern:      "metrics",
			DisplayAttrs: &framework.DisplayAttributes{OperationPrefix: operationPrefix},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathMetricsRead,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read", OperationSuffix: "metrics"},
					Summary:      "The engine's counters in Prometheus text format.",
					Responses:    metricsResponse(),
				},
			},
			HelpSynopsis: "Counters in Prometheus text format, for scraping through Vault's API.",
			HelpDescription: `External plugins cannot feed Vault's own telemetry, so the engine serves its
counters here. Scrape it with a Vault token whose policy allows read on this
path; the values are this node's since the plugin started.`,
		},
	}
}

func (b *backend) pathInfoRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	data := map[string]any{
		"version":  Version,
		"counters": b.metrics.snapshot(),
	}
	conn, err := b.connection(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	data["configured"] = conn != nil
	data[keyThrottledUntil] = formatTime(b.throttledUntil())
	if conn != nil {
		data[keyIMSURL] = conn.config.IMSURL
		data[keyClientID] = conn.config.ClientID
		st, err := getRotationStatus(ctx, req.Storage)
		if err != nil {
			return nil, err
		}
		data["rotation"] = rotationState(conn.config, st, b.opts.now())
	}
	var tokens []map[string]any
	for _, s := range b.cache.States() {
		tokens = append(tokens, map[string]any{
			"scopes":        strings.Split(s.Scopes, ","),
			"minted_at":     formatTime(s.MintedAt),
			"expires_at":    formatTime(s.ExpiresAt),
			"refresh_at":    formatTime(s.RefreshAt),
			"safe_end":      formatTime(s.SafeEnd),
			"last_read":     formatTime(s.LastUsed),
			"last_error":    s.LastError,
			"last_error_at": formatTime(s.LastErrorAt),
			"next_attempt":  formatTime(s.NextAttempt),
		})
	}
	data["shared_tokens"] = tokens
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathMetricsRead(context.Context, *logical.Request, *framework.FieldData) (*logical.Response, error) {
	var sb strings.Builder
	for _, c := range b.metrics.counters() {
		fmt.Fprintf(&sb, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", c.name, c.help, c.name, c.name, c.value)
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: "text/plain; version=0.0.4; charset=utf-8",
		logical.HTTPRawBody:     []byte(sb.String()),
		logical.HTTPStatusCode:  200,
	}}, nil
}
