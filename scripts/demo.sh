#!/usr/bin/env bash
# The privlink demo: privlinkd on its embedded default between two network namespaces.
#
#   privlink-consumer  10.1.0.10/24 ── plc0 ══ privlinkd ══ plp0 ── privlink-provider
#                      fd00:c1::10/64                               targets 10.2.0.11, 10.2.0.12
#                      endpoint 10.1.0.100                          SNAT address 10.2.0.100
#                          and [fd00:c1::64] (dual stack)
#
# Shows HTTP and UDP through the endpoint, over IPv4 and IPv6 (the service is IPv4-only:
# the appliance translates), a target taken out of service by its health check and back,
# then keeps running until Ctrl-C or SIGTERM and
# cleans up (namespaces, servers, daemon) however it ends.
#   scripts/demo.sh [PATH/TO/privlinkd]
set -euo pipefail

BIN=${1:-target/release/privlinkd}
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONS=privlink-consumer
PROV=privlink-provider
WORK=$(mktemp -d /tmp/privlink-demo.XXXXXX)
PIDS=()
DAEMON=""

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo: cleaning up"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "$DAEMON" ] && kill -0 "$DAEMON" 2>/dev/null; then
    kill -TERM "$DAEMON" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DAEMON" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DAEMON" 2>/dev/null || true
    grep -E "stopped:|port " "$WORK/privlinkd.log" | tail -3 || true
  fi
  ip netns del "$CONS" 2>/dev/null || true
  ip netns del "$PROV" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (namespaces and tap devices)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo: $BIN not built (make demo builds it)" >&2; exit 1; }
if ip link show plc0 >/dev/null 2>&1 || ip netns list | grep -qw "$CONS"; then
  echo "demo: a previous demo is still running (or left plc0/namespaces behind); stop it first" >&2
  ip netns del "$CONS" 2>/dev/null || true
  ip netns del "$PROV" 2>/dev/null || true
fi

for ns in "$CONS" "$PROV"; do
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
done

echo "demo: starting privlinkd (embedded default configuration; privlinkd --print-default shows it)"
RUST_LOG=${RUST_LOG:-info} "$BIN" >"$WORK/privlinkd.out" 2>"$WORK/privlinkd.log" &
DAEMON=$!
for _ in $(seq 1 300); do
  grep -q "privlinkd ready" "$WORK/privlinkd.log" 2>/dev/null && break
  kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/privlinkd.log"; echo "demo: privlinkd exited" >&2; exit 1; }
  sleep 0.1
done
grep -q "privlinkd ready" "$WORK/privlinkd.log" || { cat "$WORK/privlinkd.log"; exit 1; }

wire() { # iface namespace addresses... (an IPv6 one turns IPv6 on for the interface)
  local ifc=$1 ns=$2 v6=1; shift 2
  ip link set "$ifc" netns "$ns"
  for a in "$@"; do case $a in *:*) v6=0 ;; esac; done
  ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=$v6" || true
  for a in "$@"; do
    case $a in
      *:*) ip netns exec "$ns" ip -6 addr add "$a" dev "$ifc" nodad ;;
      *) ip netns exec "$ns" ip addr add "$a" dev "$ifc" ;;
    esac
  done
  ip netns exec "$ns" ip link set "$ifc" up
}
wire plc0 "$CONS" 10.1.0.10/24 fd00:c1::10/64
wire plp0 "$PROV" 10.2.0.11/24 10.2.0.12/24

for i in 1 2; do
  ip netns exec "$PROV" python3 "$HERE/tests/support/target_server.py" \
    --bind "10.2.0.1$i" --name "target-$i" --health "$WORK/target-$i.health" \
    >"$WORK/target-$i.out" 2>&1 &
  PIDS+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 50); do grep -q "^target" "$WORK/target-$i.out" 2>/dev/null && break; sleep 0.1; done
done

echo
echo "demo: the consumer (namespace $CONS) calls the endpoint 10.1.0.100"
for _ in 1 2 3 4; do
  printf '  $ curl http://10.1.0.100/   →  '
  ip netns exec "$CONS" curl -s --max-time 3 http://10.1.0.100/ || echo "(no answer)"
done
printf '  UDP 10.1.0.100:9000        →  '
ip netns exec "$CONS" python3 "$HERE/tests/support/client.py" udp 10.1.0.100 9000 1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["replies"][0])'
printf '  ping 10.1.0.100            →  '
ip netns exec "$CONS" ping -c 1 -W 1 10.1.0.100 | grep -o 'time=[0-9.]* ms' || echo "(no answer)"
echo
echo "demo: the same endpoint over IPv6 (dual stack; the service's targets are IPv4 only)"
printf '  $ curl -6 http://[fd00:c1::64]/   →  '
ip netns exec "$CONS" curl -6 -s --max-time 3 'http://[fd00:c1::64]/' || echo "(no answer)"
printf '  ping -6 fd00:c1::64               →  '
ip netns exec "$CONS" ping -6 -c 1 -W 1 fd00:c1::64 | grep -o 'time=[0-9.]* ms' || echo "(no answer)"

# Health checks: target 1 out of service and back. Its /health answers the status in
# $WORK/target-1.health (200 while there is none); the demo checks every 5 s, thresholds 2.
CTL="$(dirname "$BIN")/privlinkctl"
SVC=vpce-svc-0d0000000000000d1
SOCK=/run/privlink/privlink.sock
state_of() { # IP -> "state reason" of that tcp/80 target
  "$CTL" --socket "$SOCK" --json describe-target-health --service-id "$SVC" 2>/dev/null | python3 -c '
import json, sys
for d in json.load(sys.stdin)["TargetHealthDescriptions"]:
    if d["Target"]["Id"] == sys.argv[1] and d["Listener"]["Port"] == 80:
        h = d["TargetHealth"]
        print(h["State"], h.get("Reason", ""))' "$1" 2>/dev/null || true
}
wait_state() { # IP STATE SECONDS
  local end=$((SECONDS + $3)) s=""
  while [ $SECONDS -lt $end ]; do
    s=$(state_of "$1")
    [ "${s%% *}" = "$2" ] && { echo "$s"; return 0; }
    sleep 0.5
  done
  echo "${s:-unknown} (still, after $3 s)"
  return 1
}
curls() {
  for _ in 1 2 3 4; do
    printf '  $ curl http://10.1.0.100/   →  '
    ip netns exec "$CONS" curl -s --max-time 3 http://10.1.0.100/ || echo "(no answer)"
  done
}
if [ -x "$CTL" ]; then
  echo
  echo "demo: health checks (HTTP GET /health every 5 s from 10.2.0.1, the appliance's own address)"
  printf '  both targets healthy: '; wait_state 10.2.0.11 healthy 30 >/dev/null && wait_state 10.2.0.12 healthy 30 >/dev/null && echo yes
  echo "  $ echo 503 > $WORK/target-1.health      (target-1's /health now answers 503)"
  echo 503 >"$WORK/target-1.health"
  t0=$SECONDS
  printf '  target-1: %s after %d s\n' "$(wait_state 10.2.0.11 unhealthy 20)" $((SECONDS - t0))
  curls
  echo "  $ rm $WORK/target-1.health"
  rm -f "$WORK/target-1.health"
  t0=$SECONDS
  printf '  target-1: %s again after %d s\n' "$(wait_state 10.2.0.11 healthy 20)" $((SECONDS - t0))
  curls
fi

echo
echo "The targets saw the SNAT address 10.2.0.100, never the consumer's 10.1.0.10."
echo "Try it yourself in another shell:"
echo "  ip netns exec $CONS curl http://10.1.0.100/"
echo "  ip netns exec $CONS ping 10.1.0.100"
echo "  ip netns exec $CONS curl -6 'http://[fd00:c1::64]/'"
echo "  echo 503 > $WORK/target-1.health    # take target-1 out (rm the file: back in)"
echo "  $CTL describe-target-health --service-id $SVC"
echo "  curl -s http://127.0.0.1:9469/metrics | grep privlink_endpoint   # Prometheus metrics"
echo "  tail -f /var/log/privlink/flows.log     # flow logs (a line per flow and direction each minute)"
echo "  $CTL subscribe-events                   # endpoint, health and HA events as they happen"
echo "privlinkd's log: $WORK/privlinkd.log.  Ctrl-C stops the demo and cleans up."
while kill -0 "$DAEMON" 2>/dev/null; do sleep 1; done
echo "demo: privlinkd exited"
