package adobeims

import (
	"maps"
	"slices"
	"testing"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// TestEveryOperationDeclaresItsResponses: Vault's OpenAPI document (and the
// clients generated from it) learns what an operation returns only from
// its Responses.
func TestEveryOperationDeclaresItsResponses(t *testing.T) {
	b := newBackend(backendOptions{})
	for _, p := range b.Paths {
		for op, h := range p.Operations {
			po, isOp := h.(*framework.PathOperation)
			if !isOp || len(po.Responses) == 0 {
				t.Errorf("%s %s declares no responses", op, p.Pattern)
			}
		}
	}
}

// TestResponsesListEveryFieldReturned reads every path that returns data,
// with everything configured that makes it return the most, and checks
// each key returned against the operation's declared 200 response.
func TestResponsesListEveryFieldReturned(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{"rotation_period": 3600})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated", "ttl": 60}))
	rotated := e.mustOK(e.rotate())
	e.creds("creds")

	check := func(path string, op logical.Operation, resp *logical.Response) {
		t.Helper()
		match := e.b.Route(path)
		if match == nil {
			t.Fatalf("no route for %s", path)
		}
		declared := match.Operations[op].(*framework.PathOperation).Responses[200]
		if len(declared) == 0 {
			t.Fatalf("%s %s declares no 200 response", op, path)
		}
		for k := range resp.Data {
			if _, ok := declared[0].Fields[k]; !ok {
				t.Errorf("%s %s returns %q, which its response schema does not list (it lists %v)", op, path, k, slices.Sorted(maps.Keys(declared[0].Fields)))
			}
		}
	}
	check("config/rotate-root", logical.UpdateOperation, rotated)
	for _, path := range []string{"config", "creds", "creds/d", "roles/d", "info"} {
		resp := e.mustOK(e.read(path))
		if len(resp.Data) == 0 {
			t.Fatalf("%s returned no data", path)
		}
		check(path, logical.ReadOperation, resp)
	}
	check("roles/", logical.ListOperation, e.mustOK(e.request(logical.ListOperation, "roles/", nil)))
	// creds return every field the schema has when org_id is set: the schema
	// promises nothing the path does not give.
	creds := e.creds("creds/d")
	for k := range credsFields() {
		if _, ok := creds.Data[k]; !ok {
			t.Errorf("creds schema lists %q, which creds/d did not return", k)
		}
	}
}
