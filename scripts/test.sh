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

# The benchmark harness in smoke mode: privlinkd and testpmd on net_pcap/net_null for a
# few seconds; passes when privlinkd forwards and stops cleanly.
smoke_passed=0
smoke_failed=0
if PRIVLINKD=${PRIVLINKD:-$PWD/target/release/privlinkd} \
    bash scripts/bench.sh --smoke --no-build --out bench-out/smoke 2>&1 | tee -a "$log"; then
  smoke_passed=1
else
  smoke_failed=1
  status=1
fi

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
passed=$((passed + smoke_passed))
failed=$((failed + smoke_failed))
echo
echo "privlink: $passed passed, $failed failed"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "privlink: a test binary failed to build or run (see above)" >&2
fi
exit $status
