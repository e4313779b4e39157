#!/usr/bin/env bash
# Runs every Go fuzz target (func FuzzXxx) of the module, one at a time:
# `go test -fuzz` takes one target per package per run. Each runs for
# FUZZTIME (default 100000x executions: a count, not a duration, as
# Go 1.26's fuzzing can fail spuriously when a duration runs out,
# golang/go#75804); a failing input is saved under the package's
# testdata/fuzz/<target>/ and the script stops with go test's status.
#
#   scripts/fuzz.sh                         every package with fuzz targets
#   scripts/fuzz.sh ./internal/ims/         those packages only
#   FUZZTIME=3000x scripts/fuzz.sh          briefly, as `make test` does
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
fuzztime="${FUZZTIME:-100000x}"

pkgs=("$@")
if [[ ${#pkgs[@]} -eq 0 ]]; then
	pkgs=(./...)
fi

# Packages whose test files define a fuzz target, found without compiling.
mapfile -t candidates < <(
	go list -f '{{.ImportPath}} {{.Dir}} {{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' "${pkgs[@]}" |
		while read -r pkg dir files; do
			[[ -n "$files" ]] || continue
			for f in $files; do
				if grep -q '^func Fuzz[A-Z0-9_]' "$dir/$f"; then
					echo "$pkg"
					break
				fi
			done
		done
)

ran=0
for pkg in "${candidates[@]}"; do
	mapfile -t targets < <(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in "${targets[@]}"; do
		echo "== $pkg $target ($fuzztime)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg"
		ran=$((ran + 1))
	done
done
echo "== $ran fuzz targets ran for $fuzztime each"
