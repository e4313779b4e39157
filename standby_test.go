package adobeims

import (
	"errors"
	"testing"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

// nodeState is a replication state a test puts a node in, by name.
type nodeState struct {
	name  string
	state consts.ReplicationState
}

// nodesThatDoNotWrite are the states in which Vault refuses a plugin's
// storage writes and forwards writes to the active node: a performance
// standby and a performance secondary.
func nodesThatDoNotWrite() []nodeState {
	return []nodeState{
		{"performance standby", consts.ReplicationPerformanceStandby},
		{"performance secondary", consts.ReplicationPerformanceSecondary},
	}
}

// TestDedicatedReadsGoToTheActiveNode: a dedicated token is state at IMS that
// only the active node's revocations clean up, so a performance standby or
// secondary answers a dedicated read with logical.ErrReadOnly, which makes
// Vault forward the request to the active node, and mints nothing itself.
// A shared token the node holds is served where the read arrives.
func TestDedicatedReadsGoToTheActiveNode(t *testing.T) {
	for _, tc := range nodesThatDoNotWrite() {
		t.Run(tc.name, func(t *testing.T) {
			// Writes are forwarded to the active node (Vault refuses them
			// here), so the config and roles are written while the view
			// says active; the node then reports the state under test.
			sys := logical.TestSystemView()
			e := newTestEnvWith(t, envOptions{system: sys})
			e.configure(map[string]any{"verify": false})
			e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
			e.mustOK(e.write("roles/s", map[string]any{"scopes": "openid"}))
			shared := e.creds("creds/s").Data["access_token"]
			sys.ReplicationStateVal = tc.state
			before := e.emu.Stats().TokenRequests

			resp, err := e.read("creds/d")
			if !errors.Is(err, logical.ErrReadOnly) {
				t.Fatalf("dedicated read on a %s = %#v, %v; want logical.ErrReadOnly so that Vault forwards it", tc.name, resp, err)
			}
			if n := e.emu.Stats().TokenRequests - before; n != 0 {
				t.Fatalf("dedicated read on a %s made %d IMS token requests, want none", tc.name, n)
			}

			if got := e.creds("creds/s").Data["access_token"]; got != shared {
				t.Fatalf("shared read on a %s did not serve the token the node holds", tc.name)
			}
		})
	}
}
