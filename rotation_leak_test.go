package adobeims

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ims-vault/vault-plugin-secrets-adobe-ims/internal/imsemu"
)

// TestRotationLogsNoToken: rotation mints tokens of its own, a management
// token (a bearer that can create and delete the credential's secrets) and
// one with each new secret to prove it, besides the tokens readers get.
// Rotating by hand, on schedule, with a new secret IMS refuses for a while,
// and failing then rolling back, the plugin's log (at trace level) holds
// none of those tokens and no client secret. Responses are searched for them
// by every request the env makes.
func TestRotationLogsNoToken(t *testing.T) {
	e := newRotateEnv(t, rotateOptions{})
	e.configureForRotation(map[string]any{keyRotationPeriod: "1h"})
	e.mustOK(e.write("roles/d", map[string]any{"scopes": "openid", "mode": "dedicated"}))
	e.creds("creds")
	e.creds("creds/d")

	// By hand.
	e.mustOK(e.rotate())

	// By hand, with a new secret IMS refuses twice before it works: the
	// retries are logged at debug, with IMS's error.
	e.afterNet = once(is(opCreate), func() error {
		e.emu.SetFault(&imsemu.Fault{Endpoint: imsemu.EndpointToken, Kind: imsemu.KindStatus, Status: 400, ErrorCode: "invalid_client", Times: 2})
		return nil
	})
	e.mustOK(e.rotate())
	e.clearHooks()

	// On schedule, through Vault's periodic call.
	e.clock.Advance(61 * time.Minute)
	if err := e.periodic(); err != nil {
		t.Fatalf("periodic call with a rotation due: %v", err)
	}

	// Failing to delete the old secret, then the rollback deleting it.
	e.setBeforeNet(always(is(opDelete), injected("network down")))
	e.mustOK(e.rotate())
	e.clearHooks()
	e.rollback()
	e.assertSound("after the rollback")

	tokens := e.emu.Tokens()
	management := 0
	for _, tok := range tokens {
		if slices.Contains(tok.Scopes, "manage_client_secrets") {
			management++
		}
	}
	if rotations := 4; management < rotations {
		t.Fatalf("IMS issued %d management tokens for %d rotations: the search below would not cover them", management, rotations)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "rotated the client secret") {
		t.Fatalf("the captured log does not show the rotations, so searching it proves nothing:\n%s", logs)
	}
	for _, tok := range tokens {
		if strings.Contains(logs, tok.AccessToken) {
			what := "a token"
			if slices.Contains(tok.Scopes, "manage_client_secrets") {
				what = "a management token"
			}
			t.Errorf("the plugin log contains %s IMS issued (scopes %s)", what, strings.Join(tok.Scopes, ","))
		}
	}
	e.assertNoRotatedSecretsIn("plugin log", logs)
}
