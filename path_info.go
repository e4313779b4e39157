package adobeims

import (
	"context"
	"net/http"
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
					Summary:      "The engine's metrics in the Prometheus text exposition format.",
					Responses:    metricsResponse(),
				},
			},
			HelpSynopsis: "Metrics in the Prometheus text format, for scraping through Vault's API.",
			HelpDescription: `External plugins cannot feed Vault's own telemetry, so the engine serves its
metrics here: counters and IMS latency since the plugin started on this node,
each shared token's expiry and replacement times, IMS throttling and the
rotation schedule. Scrape it with a Vault token whose policy allows read on
this path. docs/monitoring.md lists every metric.`,
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
	body, err := b.exposition()
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{
		logical.HTTPContentType: metricsContentType,
		logical.HTTPRawBody:     body,
		logical.HTTPStatusCode:  http.StatusOK,
	}}, nil
}
