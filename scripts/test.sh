#!/usr/bin/env bash
# Runs the whole suite with -race, as `make test` does. The verbose log
# goes to a file; the output shows each package's result, every skipped
# test by name (under this command none may skip: GATEWAY_TEST_REQUIRE
# turns a missing redis-server or chromium into a failure), and a closing
# count. On failure the whole log is printed. The browser test's
# screenshot goes to artifacts/.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT

GATEWAY_TEST_REQUIRE=redis,chromium,postgres GATEWAY_TEST_ARTIFACTS="$PWD/artifacts" CGO_ENABLED=1 go test -race -count=1 -timeout 10m -v ./... >"$log" 2>&1
status=$?

grep -E '^(ok|FAIL|\?) ' "$log"
grep -E -- '--- SKIP' "$log" || true
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
if [ "$status" -ne 0 ]; then
  echo "---- full test log ----"
  cat "$log"
fi
echo "tests: $passed passed, $failed failed, $skipped skipped"
exit "$status"
