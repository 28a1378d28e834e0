#!/usr/bin/env bash
# Installs what the test suite needs that Go does not bring, when missing.
# Today that is a C compiler, which `go test -race` requires (cgo).
# Runs unattended: CI runs it as root with no terminal.
set -euo pipefail

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "test-deps: installing ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
