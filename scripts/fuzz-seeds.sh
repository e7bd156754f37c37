#!/usr/bin/env bash
# Fuzz seeds from real traffic. Runs end-to-end tests (tests/tests/*.rs) with
# PRIVLINK_E2E_CAPTURE set, so tcpdump records every frame on the consumer's and the
# provider's namespace interface, then turns the captures into corpus files for the
# packet fuzz targets (appliance/examples/fuzz_seeds.rs):
#   appliance/fuzz/corpus/process_frame/       one captured frame per input
#   appliance/fuzz/corpus/process_structured/  the exchanges in order, as scenario events
# The corpora are made here, never committed (.gitignore). Run as root, like the e2e tests.
#
#   scripts/fuzz-seeds.sh [TEST ...]     default: serves_endpoint_with_one_worker
#   KEEP_CAPTURES=DIR scripts/fuzz-seeds.sh   also keeps the pcap files in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-$(command -v cargo || echo "$HOME/.cargo/bin/cargo")}
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(serves_endpoint_with_one_worker)

if ! command -v tcpdump >/dev/null; then
    echo "fuzz-seeds: installing tcpdump"
    apt-get install -y -q tcpdump >/dev/null 2>&1 || {
        apt-get update -q >/dev/null && apt-get install -y -q tcpdump >/dev/null
    }
fi

caps=${KEEP_CAPTURES:-$(mktemp -d /tmp/privlink-fuzz-captures.XXXXXX)}
mkdir -p "$caps"
[ -n "${KEEP_CAPTURES:-}" ] || trap 'rm -rf "$caps"' EXIT

"$CARGO" build --release --bins
for t in "${tests[@]}"; do
    echo "fuzz-seeds: capturing $t"
    PRIVLINK_E2E_CAPTURE="$caps" PRIVLINKD="$PWD/target/release/privlinkd" \
        "$CARGO" test -q -p privlink-e2e -- --test-threads=1 --exact "$t"
done

pairs=()
for c in "$caps"/*-consumer.pcap; do
    p="${c%-consumer.pcap}-provider.pcap"
    [ -f "$c" ] && [ -f "$p" ] && pairs+=("$c" "$p")
done
[ ${#pairs[@]} -gt 0 ] || { echo "fuzz-seeds: no captures in $caps" >&2; exit 1; }
"$CARGO" run -q --release -p appliance --example fuzz_seeds -- \
    --out appliance/fuzz/corpus "${pairs[@]}"
echo "fuzz-seeds: run e.g. (cd appliance && RUSTC_BOOTSTRAP=1 cargo fuzz run -s none process_structured -- -max_total_time=90)"
