//go:build tools

// Package tools pins the Vault server that the end-to-end tests and the demo run.
// Vault's go.mod carries replace directives, so it cannot be `go install`ed; it is
// built as a dependency of this module instead (see scripts/vault.sh).
package tools

import _ "github.com/hashicorp/vault"
