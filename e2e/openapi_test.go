package e2e

import (
	"testing"
)

// TestOpenAPINamesEveryOperation reads Vault's OpenAPI document and checks
// that every path and operation of the plugin has its intended operation id,
// which generated clients and the Vault UI use.
func TestOpenAPINamesEveryOperation(t *testing.T) {
	v := startVault(t, vaultOptions{})
	v.mountPlugin()

	secret, err := v.client.Logical().Read("sys/internal/specs/openapi")
	if err != nil {
		t.Fatal(err)
	}
	paths, _ := secret.Data["paths"].(map[string]any)
	want := map[string]map[string]string{
		"/adobe/config": {
			"get": "adobe-ims-read-configuration", "post": "adobe-ims-write-configuration", "delete": "adobe-ims-delete-configuration",
		},
		"/adobe/config/rotate-root": {"post": "adobe-ims-rotate-root-credentials"},
		"/adobe/roles/":             {"get": "adobe-ims-list-roles"},
		"/adobe/roles/{name}": {
			"get": "adobe-ims-read-role", "post": "adobe-ims-write-role", "delete": "adobe-ims-delete-role",
		},
		"/adobe/creds":        {"get": "adobe-ims-generate-credentials"},
		"/adobe/creds/{role}": {"get": "adobe-ims-generate-role-credentials"},
		"/adobe/info":         {"get": "adobe-ims-read-info"},
		"/adobe/metrics":      {"get": "adobe-ims-read-metrics"},
	}
	for path, ops := range want {
		item, ok := paths[path].(map[string]any)
		if !ok {
			t.Errorf("OpenAPI has no path %s", path)
			continue
		}
		for method, id := range ops {
			op, _ := item[method].(map[string]any)
			if got, _ := op["operationId"].(string); got != id {
				t.Errorf("%s %s: operationId %q, want %q", method, path, got, id)
			}
			if summary, _ := op["summary"].(string); summary == "" {
				t.Errorf("%s %s has no summary", method, path)
			}
		}
	}
	for path := range paths {
		if len(path) > 7 && path[:7] == "/adobe/" {
			if _, ok := want[path]; !ok {
				t.Errorf("OpenAPI path %s is not checked by this test: add it", path)
			}
		}
	}
}
