#!/usr/bin/env bash
# Installs what the test suite needs that Go does not bring, when missing:
# a C compiler for `go test -race` (cgo), redis-server for the tests of
# limits and streams shared across replicas, PostgreSQL for the usage
# ledger's tests, and chromium for the playground's browser test. Runs unattended: CI runs it as root with no
# terminal.
set -euo pipefail

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium fonts-dejavu-core)
# Debian keeps the server's binaries off PATH, under its version.
compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || command -v postgres >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "test-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
# The package starts a system-wide server where it can; the tests start
# their own on free ports and need none.
