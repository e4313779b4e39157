#!/usr/bin/env bash
# Cross-compiles static plugin binaries with the version injected and writes
# SHA256SUMS, the sums to register each binary with in Vault.
#   scripts/release.sh VERSION DIST [PLATFORM...]   (PLATFORM as os/arch)
set -euo pipefail
version=${1:?usage: release.sh VERSION DIST [os/arch...]}
dist=${2:?usage: release.sh VERSION DIST [os/arch...]}
shift 2
platforms=("$@")
[[ ${#platforms[@]} -gt 0 ]] || platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64)
[[ $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || { echo "release: VERSION must be semver with a leading v, e.g. v1.2.3 (Vault requires it)" >&2; exit 2; }

root="$(cd "$(dirname "$0")/.." && pwd)"
name=vault-plugin-secrets-adobe-ims
mkdir -p "$dist"
rm -f "$dist/SHA256SUMS"
for p in "${platforms[@]}"; do
	os=${p%/*} arch=${p#*/}
	out="${name}_${version}_${os}_${arch}"
	echo "release: building $out" >&2
	(cd "$root" && CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath \
		-ldflags "-s -w -X github.com/ims-vault/vault-plugin-secrets-adobe-ims.Version=$version" \
		-o "$dist/$out" "./cmd/$name")
done
(cd "$dist" && sha256sum "${name}_${version}"_* >SHA256SUMS)
cat "$dist/SHA256SUMS"
