#!/usr/bin/env bash
# Builds the Vault server that tests and the demo run, once, into a cache
# outside the clone, and prints its path. Vault's go.mod has replace
# directives, so it is built as a dependency of tools/vault rather than with
# `go install`. The first build downloads a few GB of modules and compiles for
# about 20 minutes on two cores; later calls return the cached binary at once.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
version="$(awk '/^require github.com\/hashicorp\/vault /{print $3}' "$root/tools/vault/go.mod")"
cache="${VAULT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vault-plugin-secrets-adobe-ims}"
out="$cache/vault-$version"

if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/.build.lock"
echo "vault.sh: waiting for any other Vault build to finish..." >&2
flock 9
if [[ -x "$out" ]]; then
	echo "$out"
	exit 0
fi

log="$cache/build-$version.log"
echo "vault.sh: building Vault $version into $out (first time only: ~4 min of downloads, ~20 min of compiling on 2 cores; log: $log)" >&2
start=$SECONDS
(
	cd "$root/tools/vault"
	go build -v -trimpath -ldflags "-s -w" -o "$out.tmp" github.com/hashicorp/vault
) >"$log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
	sleep 30 &
	wait $! || true
	if kill -0 "$pid" 2>/dev/null; then
		echo "vault.sh: still building Vault ($(( (SECONDS - start) / 60 )) min, $(grep -c . "$log" || true) packages compiled so far)" >&2
	fi
done
if ! wait "$pid"; then
	echo "vault.sh: building Vault failed; last lines of $log:" >&2
	tail -n 30 "$log" >&2
	exit 1
fi
mv "$out.tmp" "$out"
echo "vault.sh: built Vault $version in $(( (SECONDS - start) / 60 )) min" >&2
echo "$out"
