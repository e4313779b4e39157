#!/usr/bin/env bash
# make demo: runs the IMS emulator (a test double of Adobe IMS), a Vault dev
# server with the plugin registered by SHA-256 and version, mounts it at
# adobe/, configures it, and mints a token with the vault CLI.
# `make demo-stop` (or `scripts/demo.sh stop`) ends it.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${DEMO_DIR:-$root/.demo}"
version="${VERSION:-v0.1.0}"
plugin=vault-plugin-secrets-adobe-ims
vault_port="${DEMO_VAULT_PORT:-8200}"
ims_port="${DEMO_IMS_PORT:-8181}"
ctl_port="${DEMO_IMS_CONTROL_PORT:-8182}"
firefly_scopes="openid,AdobeID,session,additional_info,read_organizations,firefly_api,ff_apis"

stop() {
	for name in vault ims-emulator; do
		if [[ -f "$dir/$name.pid" ]]; then
			kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
			rm -f "$dir/$name.pid"
		fi
	done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # wait_for DESCRIPTION COMMAND...
	local what=$1; shift
	for _ in $(seq 1 100); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.2
	done
	echo "demo: $what did not come up; see the logs in $dir" >&2
	exit 1
}

start() {
	stop
	for p in "$vault_port" "$ims_port" "$ctl_port"; do
		port_free "$p" || { echo "demo: port $p on 127.0.0.1 is in use; stop what uses it or set DEMO_VAULT_PORT / DEMO_IMS_PORT / DEMO_IMS_CONTROL_PORT" >&2; exit 1; }
	done
	mkdir -p "$dir/plugins"
	cp "$root/bin/$plugin" "$dir/plugins/$plugin"
	vault_bin="$("$root/scripts/vault.sh")"
	ln -sf "$vault_bin" "$dir/vault"

	# The emulator's credential: a fresh random secret that only this script
	# and the emulator see; it reaches Vault through stdin, never argv.
	client_id="demo-client-id"
	client_secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
	IMS_EMULATOR_CLIENT_SECRET="$client_secret" nohup "$root/bin/ims-emulator" \
		-addr "127.0.0.1:$ims_port" -control-addr "127.0.0.1:$ctl_port" \
		-client-id "$client_id" >"$dir/ims-emulator.log" 2>&1 &
	echo $! >"$dir/ims-emulator.pid"

	cat >"$dir/vault.hcl" <<HCL
plugin_directory = "$dir/plugins"
HCL
	nohup "$vault_bin" server -dev -dev-root-token-id=root \
		-dev-listen-address="127.0.0.1:$vault_port" -config="$dir/vault.hcl" \
		>"$dir/vault.log" 2>&1 &
	echo $! >"$dir/vault.pid"

	export VAULT_ADDR="http://127.0.0.1:$vault_port" VAULT_TOKEN=root
	wait_for "the IMS emulator" bash -c "exec 3<>/dev/tcp/127.0.0.1/$ims_port"
	wait_for "Vault" "$vault_bin" status

	sha="$(sha256sum "$dir/plugins/$plugin" | cut -d' ' -f1)"
	run "$vault_bin" plugin register -sha256="$sha" -version="$version" secret "$plugin"
	run "$vault_bin" secrets enable -path=adobe -plugin-version="$version" "$plugin"
	printf '%s' "$client_secret" | run "$vault_bin" write adobe/config \
		client_id="$client_id" client_secret=- scopes="$firefly_scopes" \
		ims_url="http://127.0.0.1:$ims_port" io_management_url="http://127.0.0.1:$ims_port"
	run "$vault_bin" read adobe/config
	run "$vault_bin" write adobe/roles/firefly scopes="$firefly_scopes"
	run "$vault_bin" read adobe/creds/firefly

	cat <<MSG

The demo is running: Vault $("$vault_bin" version | cut -d' ' -f2 | tr -d ,) (dev mode, in memory) with
$plugin $version mounted at adobe/, and the IMS emulator (a test double of
Adobe IMS) on 127.0.0.1:$ims_port. Try it:

  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root
  $dir/vault read adobe/creds/firefly
  $dir/vault read adobe/config
  $dir/vault path-help adobe/creds/firefly

Logs: $dir/vault.log, $dir/ims-emulator.log
Stop it with: make demo-stop
MSG
}

run() { echo "\$ ${*#"$root/"}" | sed "s|$vault_bin|vault|"; "$@"; echo; }

case "${1:-start}" in
start) start ;;
stop) stop; echo "demo stopped" ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
