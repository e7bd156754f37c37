#!/usr/bin/env bash
# Runs every test: unit, property and DPDK integration tests of the workspace, then the
# end-to-end tests (one at a time: each runs its own privlinkd and namespaces). Ends with
# one summary line "privlink: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
log=$(mktemp /tmp/privlink-test.XXXXXX)
trap 'rm -f "$log"' EXIT

status=0
"$CARGO" test --workspace --exclude privlink-e2e 2>&1 | tee -a "$log" || status=1
PRIVLINKD=${PRIVLINKD:-$PWD/target/release/privlinkd} \
  "$CARGO" test -p privlink-e2e -- --test-threads=1 2>&1 | tee -a "$log" || status=1

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
echo
echo "privlink: $passed passed, $failed failed"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "privlink: a test binary failed to build or run (see above)" >&2
fi
exit $status
