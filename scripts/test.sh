#!/usr/bin/env bash
# Runs every test: unit, property and DPDK integration tests of the workspace, then the
# end-to-end tests (one at a time: each runs its own privlinkd and namespaces). Ends with
# one summary line "privlink: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
CARGO=${CARGO:-cargo}
log=$(mktemp /tmp/privlink-test.XXXXXX)
trap 'rm -f "$log"' EXIT

status=0
"$CARGO" test --workspace --exclude privlink-e2e 2>&1 | tee -a "$log" || status=1
PRIVLINKD=${PRIVLINKD:-$PWD/target/release/privlinkd} \
  "$CARGO" test -p privlink-e2e -- --test-threads=1 2>&1 | tee -a "$log" || status=1

# The fuzz targets are a crate of their own (not a workspace member): check that they
# still build against the current API, so a change cannot break them unnoticed. Their build
# goes under the workspace's target/, not into the source tree beside them.
if "$CARGO" check --manifest-path appliance/fuzz/Cargo.toml --bins --target-dir target/fuzz 2>&1 | tee -a "$log"; then
  fuzz_check=1
else
  fuzz_check=0
  status=1
fi

# The benchmark harnesses in smoke mode, a few seconds each: privlinkd and testpmd on
# net_pcap/net_null, and testpmd txonly -> privlinkd -> testpmd rxonly over net_memif.
# Each passes when privlinkd forwards and stops cleanly.
smoke_passed=0
smoke_failed=0
for smoke in "scripts/bench.sh --smoke --no-build --out bench-out/smoke" \
             "scripts/bench-load.sh --smoke --out bench-out/load-smoke"; do
  # shellcheck disable=SC2086 # the command line is split on purpose
  if PRIVLINKD=${PRIVLINKD:-$PWD/target/release/privlinkd} bash $smoke 2>&1 | tee -a "$log"; then
    smoke_passed=$((smoke_passed + 1))
  else
    smoke_failed=$((smoke_failed + 1))
    status=1
  fi
done

# The update benchmark's address plan (the 1M run's changes once collided with its
# declared endpoints).
if python3 scripts/bench/update.py check 2>&1 | tee -a "$log"; then
  smoke_passed=$((smoke_passed + 1))
else
  smoke_failed=$((smoke_failed + 1))
  status=1
fi

passed=$(grep -Eo '^test result: .* ([0-9]+) passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo '^test result: .* ([0-9]+) failed' "$log" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}')
passed=$((passed + smoke_passed + fuzz_check))
failed=$((failed + smoke_failed + 1 - fuzz_check))
echo
echo "privlink: $passed passed, $failed failed"
if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
  echo "privlink: a test binary failed to build or run (see above)" >&2
fi
exit $status
