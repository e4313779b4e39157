package e2e

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
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

// TestOpenAPIDescribesWhatCredsReturn reads a token through Vault and checks
// that the OpenAPI document's response schema of creds/{role} lists every
// field of it, so that generated clients see client_id and org_id too.
func TestOpenAPIDescribesWhatCredsReturn(t *testing.T) {
	emu := startEmulator(t, 24*time.Hour)
	v := startVault(t, vaultOptions{})
	v.mountPlugin()
	v.configure(emu, "org_id=1234ABCD@AdobeOrg")
	v.mustCLI("write", "adobe/roles/firefly", "scopes=openid,AdobeID,firefly_api")
	creds, err := v.client.Logical().Read("adobe/creds/firefly")
	if err != nil || creds == nil {
		t.Fatalf("reading creds: %v", err)
	}

	doc, err := v.client.Logical().Read("sys/internal/specs/openapi")
	if err != nil || doc == nil {
		t.Fatalf("reading the OpenAPI document: %v", err)
	}
	props := oaResponseProperties(t, doc.Data, "/adobe/creds/{role}", "get")
	for field := range creds.Data {
		if _, ok := props[field]; !ok {
			t.Errorf("creds returned %q, which the OpenAPI response schema does not list (it lists %v)", field, slices.Sorted(maps.Keys(props)))
		}
	}
	for _, want := range []string{"access_token", "client_id", "org_id"} {
		if _, ok := creds.Data[want]; !ok {
			t.Errorf("creds did not return %s", want)
		}
	}
}

// oaResponseProperties returns the properties of the 200 response schema of
// an operation. Vault's API answer drops $ref, so the schema is found by the
// name Vault gives it: the operation id in camel case, then "Response".
func oaResponseProperties(t *testing.T, doc map[string]any, path, method string) map[string]any {
	t.Helper()
	paths, _ := doc["paths"].(map[string]any)
	components, _ := doc["components"].(map[string]any)
	schemas, _ := components["schemas"].(map[string]any)
	item, _ := paths[path].(map[string]any)
	op, _ := item[method].(map[string]any)
	responses, _ := op["responses"].(map[string]any)
	okResp, _ := responses["200"].(map[string]any)
	content, _ := okResp["content"].(map[string]any)
	media, _ := content["application/json"].(map[string]any)
	schema, _ := media["schema"].(map[string]any)
	if ref, ok := schema["$ref"].(string); ok {
		schema, _ = schemas[strings.TrimPrefix(ref, "#/components/schemas/")].(map[string]any)
	} else if id, _ := op["operationId"].(string); len(schema) == 0 && id != "" {
		var name strings.Builder
		for w := range strings.SplitSeq(id, "-") {
			if w != "" {
				name.WriteString(strings.ToUpper(w[:1]) + w[1:])
			}
		}
		schema, _ = schemas[name.String()+"Response"].(map[string]any)
	}
	props, _ := schema["properties"].(map[string]any)
	if len(props) == 0 {
		t.Fatalf("%s %s: no 200 response schema in the OpenAPI document (responses %v)", method, path, responses)
	}
	return props
}
