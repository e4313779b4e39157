#!/usr/bin/env bash
# Mutation testing: does the unit suite notice when the code is broken?
#
#   scripts/mutate.sh            both parts below (what `make mutate` runs)
#   scripts/mutate.sh list       only the listed mutations (a few minutes)
#   scripts/mutate.sh gremlins   only the gremlins run (hours on two cores)
#
# 1. list: the regressions issue 15 found no test for, and some gremlins found
#    since, one small patch each,
#    applied one at a time to a scratch copy; the tests named for each run
#    against it. Prints a table, mutation -> caught or survived, and fails if
#    any survived, if a patch no longer applies (the code moved: update it
#    here) or if the tests fail without any mutation.
# 2. gremlins: github.com/go-gremlins/gremlins over the root package and
#    internal/, printing its efficacy (killed / (killed + lived)). It runs in a
#    copy without e2e/: gremlins first runs `go test ./...` for coverage, and
#    the e2e suite needs a Vault server (VAULT_BINARY). GREMLINS_PATH narrows
#    the scope (e.g. ./internal/tokencache), GREMLINS_FLAGS adds flags (e.g.
#    "-E ^internal/" to leave a directory out), GREMLINS_WORKERS (default 1)
#    and GREMLINS_TIMEOUT_COEFFICIENT (default 5) tune it.
#
# Nothing here touches the working tree: every mutation is applied to the copy.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
GREMLINS=github.com/go-gremlins/gremlins/cmd/gremlins@v0.6.0
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(list gremlins)

WORK=$(mktemp -d "${TMPDIR:-/tmp}/adobe-ims-mutate-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
SRC=$WORK/src
mkdir -p "$SRC"
(cd "$ROOT" && tar --exclude=./.git --exclude=./bin --exclude=./dist --exclude=./e2e -cf - .) | tar -xf - -C "$SRC"

# subst FILE OLD NEW replaces the one occurrence of OLD's text by NEW's.
mkdir -p "$WORK/subst"
cat >"$WORK/subst/main.go" <<'EOF'
package main

import (
	"bytes"
	"fmt"
	"os"
)

func main() {
	file := os.Args[1]
	src, err := os.ReadFile(file)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	old, _ := os.ReadFile(os.Args[2])
	repl, _ := os.ReadFile(os.Args[3])
	if n := bytes.Count(src, old); n != 1 {
		fmt.Fprintf(os.Stderr, "%s: the code to mutate occurs %d times, want once\n", file, n)
		os.Exit(3)
	}
	if err := os.WriteFile(file, bytes.Replace(src, old, repl, 1), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
}
EOF
(cd "$WORK/subst" && go mod init subst >/dev/null 2>&1 && go build -o "$WORK/subst/subst" .)

names=() files=() pkgs=() runs=()
# mutation NAME FILE PKG TESTS, with the code to replace on fd 3 and its
# replacement on fd 4.
mutation() {
	local i=${#names[@]}
	names+=("$1") files+=("$2") pkgs+=("$3") runs+=("$4")
	cat <&3 >"$WORK/old.$i"
	cat <&4 >"$WORK/new.$i"
}

mutation lease-role-ttl-past-safe-end path_token.go . '^TestRoleTTLNeverPassesTheSafeEnd$' 3<<'OLD' 4<<'NEW'
		ttl = min(ttl, r.TTL)
OLD
		ttl = r.TTL
NEW

mutation revoke-skips-at-safe-end path_token.go . '^TestDedicatedLeaseEndingAtItsTTLInvalidatesItsToken$' 3<<'OLD' 4<<'NEW'
	if expiresAt, err := internalTime(req.Secret.InternalData, internalExpiresAt); err == nil && !b.opts.now().Before(expiresAt) {
OLD
	if expiresAt, err := internalTime(req.Secret.InternalData, internalSafeEnd); err == nil && !b.opts.now().Before(expiresAt) {
NEW

mutation dedicated-read-on-standby path_token.go . '^TestDedicatedReadsGoToTheActiveNode$' 3<<'OLD' 4<<'NEW'
		if b.isPerformanceStandby() {
			return nil, logical.ErrReadOnly
		}
		tok, err = b.mint(ctx, conn.client, cr.scopes)
OLD
		tok, err = b.mint(ctx, conn.client, cr.scopes)
NEW

mutation client-id-change-keeps-tokens backend.go . '^(TestConfigChangeKeepsOrDropsTokensAlikeOnEveryNode|TestInvalidateAfterClientChangeElsewhereServesNoOldToken)$' 3<<'OLD' 4<<'NEW'
	return a.ClientID == b.ClientID && a.IMSURL == b.IMSURL && slices.Equal(a.Scopes, b.Scopes)
OLD
	return a.IMSURL == b.IMSURL && slices.Equal(a.Scopes, b.Scopes)
NEW

mutation invalidate-keeps-tokens backend.go . '^(TestConfigChangeKeepsOrDropsTokensAlikeOnEveryNode|TestInvalidateAfterClientChangeElsewhereServesNoOldToken)$' 3<<'OLD' 4<<'NEW'
		old = b.conn.config
	}
	b.useConfigLocked(old, cfg)
OLD
		old = b.conn.config
	}
	_ = old
	b.useConfigLocked(cfg, cfg)
NEW

mutation purge-keeps-generation internal/tokencache/cache.go ./internal/tokencache '^TestReaderAfterPurgeDoesNotJoinAnEarlierMint$' 3<<'OLD' 4<<'NEW'
	c.generation.Add(1)
OLD
NEW

mutation hits-record-no-use internal/tokencache/cache.go ./internal/tokencache '^TestReplacementsContinueUnderHitOnlyTraffic$' 3<<'OLD' 4<<'NEW'
	now := c.opts.Now()
	e.lastUsed.Store(now.UnixNano())
OLD
	now := c.opts.Now()
NEW

mutation no-recheck-in-flight internal/tokencache/cache.go ./internal/tokencache '^TestExpiredTokenReplacedOnceByConcurrentReaders$' 3<<'OLD' 4<<'NEW'
		if tok := e.token.Load(); tok != nil && c.opts.Now().Before(tok.SafeEnd()) {
			return tok, nil
		}
		return c.mintAndStore(key, e)
	})
OLD
		return c.mintAndStore(key, e)
	})
NEW

mutation management-token-logged rotation.go . '^TestRotationLogsNoToken$' 3<<'OLD' 4<<'NEW'
	if r.bearer, err = b.managementToken(ctx, cfg); err != nil {
		return nil, err
	}
OLD
	if r.bearer, err = b.managementToken(ctx, cfg); err != nil {
		return nil, err
	}
	r.log.Debug("minted a management token", "token", r.bearer)
NEW

mutation verify-ims-down-is-500 validate.go . '^TestConfigVerifyIMSDownIs502$' 3<<'OLD' 4<<'NEW'
	return nil, logical.CodedError(http.StatusBadGateway, msg)
OLD
	return nil, logical.CodedError(http.StatusInternalServerError, msg)
NEW

# Found by gremlins since.
mutation zero-ttl-lease path_token.go . '^TestTokenAtItsEndIsNeverLeased$' 3<<'OLD' 4<<'NEW'
	if left := tok.SafeEnd().Sub(b.opts.now()); left <= 0 {
OLD
	if left := tok.SafeEnd().Sub(b.opts.now()); left < 0 {
NEW

mutation renew-caps-without-role-ttl path_token.go . '^TestRenewWithoutRoleTTLRunsToTheSafeEnd$' 3<<'OLD' 4<<'NEW'
	if r.TTL > 0 {
		// A client's increment overrides the TTL returned here; only MaxTTL,
OLD
	if r.TTL >= 0 {
		// A client's increment overrides the TTL returned here; only MaxTTL,
NEW

# Found by a flaky CI run: the periodic refresh raced a reader's refresh.
mutation periodic-refresh-no-recheck internal/tokencache/cache.go ./internal/tokencache '^TestRefreshDoesNotMintWhatAnotherRefreshReplaced$' 3<<'OLD' 4<<'NEW'
		_, err, _ := c.flight.Do(c.flightKey(key), func() (any, error) { //nolint:contextcheck // a shared mint runs on the cache's context; one caller's cancellation must not fail the flight
			return c.replaceIfDue(key, e)
OLD
		_, err, _ := c.flight.Do(c.flightKey(key), func() (any, error) { //nolint:contextcheck // a shared mint runs on the cache's context; one caller's cancellation must not fail the flight
			return c.mintAndStore(key, e)
NEW

# gotest PKG TESTS LOG runs the tests in the copy; its status is go test's.
gotest() {
	(cd "$SRC" && go test -count=1 -timeout 5m -run "$2" "$1") >"$3" 2>&1
}

# evidence LOG: the first failure message of a test run.
evidence() {
	grep -m1 -E '^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+: ' "$1" | sed -E 's/^[[:space:]]+//' | cut -c1-220 ||
		grep -m1 -E 'panic:|timed out|FAIL' "$1" || true
}

run_list() {
	echo "== listed mutations: ${#names[@]}, one at a time in $SRC"
	# Without any mutation, every test named must pass, or "caught" means nothing.
	local pkg i regex
	for pkg in $(printf '%s\n' "${pkgs[@]}" | sort -u); do
		regex=
		for i in "${!names[@]}"; do
			[ "${pkgs[$i]}" = "$pkg" ] || continue
			regex="${regex:+$regex|}(${runs[$i]})"
		done
		if ! gotest "$pkg" "$regex" "$WORK/baseline.log"; then
			cat "$WORK/baseline.log"
			echo "mutate: the tests fail without any mutation ($pkg); fix them first" >&2
			return 2
		fi
	done

	local rows=() bad=0 status file
	for i in "${!names[@]}"; do
		file=$SRC/${files[$i]}
		cp "$file" "$WORK/orig"
		if ! "$WORK/subst/subst" "$file" "$WORK/old.$i" "$WORK/new.$i" 2>"$WORK/subst.err"; then
			status="NOT APPLIED: $(cat "$WORK/subst.err") (the code moved: update the mutation)"
			bad=1
		elif gotest "${pkgs[$i]}" "${runs[$i]}" "$WORK/m.log"; then
			status="SURVIVED"
			bad=1
		elif grep -qE '^--- FAIL|^panic:|test timed out' "$WORK/m.log"; then
			status="caught: $(evidence "$WORK/m.log")"
		else
			status="DOES NOT BUILD: $(grep -m1 -E '\.go:[0-9]+:[0-9]+: ' "$WORK/m.log" || true)"
			bad=1
		fi
		cp "$WORK/orig" "$file"
		rows+=("$(printf '%-32s %s' "${names[$i]}" "$status")")
		echo "${rows[-1]}"
	done
	echo
	echo "== listed mutations: summary"
	printf '%-32s %s\n' mutation result
	printf '%s\n' "${rows[@]}"
	local caught
	caught=$(printf '%s\n' "${rows[@]}" | grep -c ' caught: ' || true)
	echo "listed mutations caught: $caught of ${#names[@]}"
	return $bad
}

run_gremlins() {
	local path=${GREMLINS_PATH:-.}
	echo "== gremlins ($GREMLINS) over $path in $SRC, without e2e/, bench/, cmd/, tools/"
	(cd "$SRC" && GOFLAGS=-count=1 go run "$GREMLINS" unleash \
		--workers "${GREMLINS_WORKERS:-1}" \
		--timeout-coefficient "${GREMLINS_TIMEOUT_COEFFICIENT:-5}" \
		-E '^bench/' -E '^cmd/' -E '^tools/' -E '^e2e/' ${GREMLINS_FLAGS:-} \
		"$path") | tee "$WORK/gremlins.log"
	echo "gremlins over $path: $(grep -E 'Test efficacy' "$WORK/gremlins.log" || echo 'no efficacy reported')"
}

status=0
for part in "${parts[@]}"; do
	case $part in
	list) run_list || status=1 ;;
	gremlins) run_gremlins || status=1 ;;
	*)
		echo "usage: $0 [list] [gremlins]" >&2
		exit 2
		;;
	esac
done
exit $status
