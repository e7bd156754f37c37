#!/usr/bin/env bash
# The privlink HA demo: two privlinkd, nodes a and b, on the same consumer and provider
# networks (a Linux bridge in each namespace), one active and one standby that keeps a
# synced copy of the active's flows.
#
#   privlink-consumer                                                privlink-provider
#   10.1.0.10/24 on br0 ─┬─ plac0 ══ privlinkd a (active)  ══ plap0 ─┬─ br0 10.2.0.11, 10.2.0.12
#   endpoint 10.1.0.100  └─ plbc0 ══ privlinkd b (standby) ══ plbp0 ─┘   SNAT address 10.2.0.100
#                           sync link: UDP 127.0.0.1:7411 <-> 127.0.0.1:7412
#                           configuration: one etcd on 127.0.0.1:23790, prefix /privlink-demo/
#
# Both nodes run the embedded demo objects (privlinkd --print-default), each with its own
# [eal] tap names and file prefix, [mgmt] paths and [ha] node, and share their
# configuration through one etcd ([cluster]; started here, its data in the demo's work
# directory). Shows an endpoint created through the standby's socket served by the active
# node, a long-lived HTTP connection surviving `kill -9` of the active node, the killed
# node rejoining as standby, then keeps running until Ctrl-C or SIGTERM and cleans up
# (namespaces, servers, daemons, etcd) however it ends.
#   scripts/demo-ha.sh [PATH/TO/privlinkd]
set -euo pipefail

BIN=${1:-target/release/privlinkd}
CTL=$(dirname "$BIN")/privlinkctl
ETCD_PORT=23790
HERE=$(cd "$(dirname "$0")/.." && pwd)
CONS=privlink-consumer
PROV=privlink-provider
WORK=$(mktemp -d /tmp/privlink-demo-ha.XXXXXX)
KEY=00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff
PIDS=()
declare -A DAEMON=([a]="" [b]="")

cleanup() {
  trap - EXIT INT TERM
  echo
  echo "demo-ha: cleaning up"
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in a b; do
    local d=${DAEMON[$n]}
    if [ -n "$d" ] && kill -0 "$d" 2>/dev/null; then
      kill -TERM "$d" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$d" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$d" 2>/dev/null || true
    fi
  done
  ip netns del "$CONS" 2>/dev/null || true
  ip netns del "$PROV" 2>/dev/null || true
  rm -rf "$WORK" /var/run/dpdk/privlink-ha-a /var/run/dpdk/privlink-ha-b
}
trap cleanup EXIT
trap 'exit 0' INT TERM

[ "$(id -u)" -eq 0 ] || { echo "demo-ha: run as root (namespaces and tap devices)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "demo-ha: $BIN not built (make demo-ha builds it)" >&2; exit 1; }
[ -x "$CTL" ] || { echo "demo-ha: $CTL not built (make demo-ha builds it)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "demo-ha: etcd is missing (bash scripts/install-deps.sh installs etcd-server)" >&2; exit 1; }
if ip link show plc0 >/dev/null 2>&1 || ip link show plac0 >/dev/null 2>&1 \
   || ip netns list | grep -qw "$CONS"; then
  echo "demo-ha: a previous demo is still running (or left taps/namespaces behind); stop it first" >&2
  ip netns del "$CONS" 2>/dev/null || true
  ip netns del "$PROV" 2>/dev/null || true
fi

# Each node's configuration: the embedded default with this node's tap names, DPDK file
# prefix and [mgmt] paths, and the pair's [ha] (the same on both but for `node`).
config() { # node -> path of its configuration
  local n=$1 dir="$WORK/$1"
  mkdir -p "$dir"
  "$BIN" --print-default | sed \
    -e "s/iface=plc0/iface=pl${n}c0/; s/iface=plp0/iface=pl${n}p0/" \
    -e "s/\"--no-pci\",/\"--no-pci\", \"--file-prefix=privlink-ha-${n}\",/" \
    -e "s#^socket = .*#socket = \"$dir/privlink.sock\"#" \
    -e "s#^state_dir = .*#state_dir = \"$dir/state\"#" \
    -e "s@^\# stats_file = .*@stats_file = \"$dir/stats.json\"@" >"$dir/privlink.toml"
  cat >>"$dir/privlink.toml" <<EOF

[ha]
node = "$n"
key = "$KEY"
heartbeat_ms = 100
dead_after = 3
preempt = false
nodes = [
  { name = "a", sync = "127.0.0.1:7411", priority = 200 },
  { name = "b", sync = "127.0.0.1:7412", priority = 100 },
]

[cluster]
etcd = ["http://127.0.0.1:$ETCD_PORT"]
prefix = "/privlink-demo/"
node = "$n"
EOF
  grep -q "iface=pl${n}c0" "$dir/privlink.toml" && grep -q "file-prefix=privlink-ha-$n" "$dir/privlink.toml" \
    || { echo "demo-ha: privlinkd --print-default changed shape; cannot derive node $n's configuration" >&2; exit 1; }
  echo "$dir/privlink.toml"
}
for n in a b; do
  cfg=$(config "$n")
  "$BIN" --check --config "$cfg" >/dev/null 2>"$WORK/check-$n.log" \
    || { cat "$WORK/check-$n.log" >&2; echo "demo-ha: node $n's configuration is refused (does this privlinkd know [ha]?)" >&2; exit 1; }
done

# The fleet's configuration store: one etcd member on loopback, for both nodes.
if curl -sf -m 1 -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$ETCD_PORT/v3/kv/range" >/dev/null 2>&1; then
  echo "demo-ha: something already answers on 127.0.0.1:$ETCD_PORT (a previous demo's etcd?); stop it first" >&2
  exit 1
fi
etcd --name demo --data-dir "$WORK/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 10))" \
  --initial-cluster "demo=http://127.0.0.1:$((ETCD_PORT + 10))" --log-level warn >"$WORK/etcd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  curl -sf -m 1 -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$ETCD_PORT/v3/kv/range" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "demo-ha: etcd on 127.0.0.1:$ETCD_PORT holds the configuration both nodes share"

# The networks: a bridge in each namespace, with a fixed MAC (a bridge takes its lowest
# port's MAC otherwise, and would change it when the active node's tap leaves).
bridge() { # namespace mac addresses...
  local ns=$1 mac=$2; shift 2
  ip netns add "$ns"
  ip netns exec "$ns" ip link set lo up
  ip netns exec "$ns" ip link add br0 address "$mac" type bridge
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.br0.disable_ipv6=1 || true
  for a in "$@"; do ip netns exec "$ns" ip addr add "$a" dev br0; done
  ip netns exec "$ns" ip link set br0 up
}
bridge "$CONS" 02:00:0a:01:00:0a 10.1.0.10/24
bridge "$PROV" 02:00:0a:02:00:0b 10.2.0.11/24 10.2.0.12/24

for i in 1 2; do
  ip netns exec "$PROV" python3 "$HERE/tests/support/target_server.py" \
    --bind "10.2.0.1$i" --name "target-$i" >"$WORK/target-$i.out" 2>&1 &
  PIDS+=($!)
done
for i in 1 2; do
  for _ in $(seq 1 50); do grep -q "^target" "$WORK/target-$i.out" 2>/dev/null && break; sleep 0.1; done
done

log_of() { echo "$WORK/$1/privlinkd.log"; }
wait_log() { # node needle seconds: 0 when the node's log has it in time
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    grep -qF "$2" "$(log_of "$1")" 2>/dev/null && return 0
    kill -0 "${DAEMON[$1]}" 2>/dev/null || { cat "$(log_of "$1")"; echo "demo-ha: node $1 exited" >&2; return 1; }
    sleep 0.1
  done
  echo "demo-ha: node $1 did not log \"$2\" within $3 s" >&2
  return 1
}
role_of() { # node -> active|standby|down, the last role change in its log
  local n=$1 line
  [ -n "${DAEMON[$n]}" ] && kill -0 "${DAEMON[$n]}" 2>/dev/null || { echo down; return; }
  # Every node starts standby ("...; starting standby"); changes say "now active|standby".
  line=$(grep -oE "ha: this node is now (active|standby)|; starting standby" "$(log_of "$n")" \
    2>/dev/null | tail -1 || true)
  case "$line" in
    *active) echo active ;;
    *standby) echo standby ;;
    *) echo starting ;;
  esac
}
wait_standby() { # node: standby, and still so a second later (it hears the active peer)
  local end=$((SECONDS + 30))
  while [ $SECONDS -lt $end ]; do
    [ "$(role_of "$1")" = standby ] && break
    sleep 0.1
  done
  sleep 1
  [ "$(role_of "$1")" = standby ] || { echo "demo-ha: node $1 is $(role_of "$1"), not standby" >&2; return 1; }
}
roles() { printf '  node a: %-8s node b: %s\n' "$(role_of a)" "$(role_of b)"; }
start_node() { # node: start it, join its new taps to the bridges
  local n=$1
  [ -f "$(log_of "$n")" ] && mv "$(log_of "$n")" "$(log_of "$n").previous"
  RUST_LOG=${RUST_LOG:-info} "$BIN" --config "$WORK/$n/privlink.toml" \
    >>"$WORK/$n/privlinkd.out" 2>"$(log_of "$n")" &
  DAEMON[$n]=$!
  wait_log "$n" "privlinkd ready" 30
  for side in c p; do
    local ifc="pl${n}${side}0" ns=$CONS
    [ "$side" = p ] && ns=$PROV
    ip link set "$ifc" netns "$ns"
    ip netns exec "$ns" sysctl -qw "net.ipv6.conf.$ifc.disable_ipv6=1" || true
    ip netns exec "$ns" ip link set "$ifc" master br0
    ip netns exec "$ns" ip link set "$ifc" up
  done
}
taps_gone() { # node: wait (at most 10 s) until its taps went with its process
  for _ in $(seq 1 100); do
    ip netns exec "$CONS" ip link show "pl${1}c0" >/dev/null 2>&1 \
      || ip netns exec "$PROV" ip link show "pl${1}p0" >/dev/null 2>&1 || return 0
    sleep 0.1
  done
}

echo "demo-ha: starting node a (priority 200), then node b (priority 100)"
start_node a
wait_log a "ha: this node is now active" 30
start_node b
wait_standby b
roles

echo
echo "demo-ha: the consumer (namespace $CONS) calls the endpoint 10.1.0.100"
for _ in 1 2; do
  printf '  $ curl http://10.1.0.100/   →  '
  ip netns exec "$CONS" curl -s --max-time 3 http://10.1.0.100/ || echo "(no answer)"
done

echo
echo "demo-ha: a second endpoint, 10.1.0.101, created through node b's socket (the standby):"
ctl() { "$CTL" --socket "$WORK/$1/privlink.sock" --json "${@:2}"; }
name=$(ctl b describe-vpc-endpoint-service-configurations | python3 -c \
  'import json,sys; print(json.load(sys.stdin)["ServiceConfigurations"][0]["ServiceName"])')
ctl b create-vpc-endpoint --vpc-id vpc-0c0000000000000c1 --service-name "$name" \
  --ip-address 10.1.0.101 | python3 -c \
  'import json,sys; e=json.load(sys.stdin)["VpcEndpoint"]; print("  through b:", e["VpcEndpointId"], e["IpAddress"], e["State"])'
sleep 0.5
printf '  node a (active) serves it:  $ curl http://10.1.0.101/   →  '
ip netns exec "$CONS" curl -s --max-time 3 http://10.1.0.101/ || echo "(no answer)"

echo
echo "demo-ha: one HTTP keep-alive connection, a GET every 100 ms for 15 s, in the background"
ip netns exec "$CONS" timeout 30 python3 -u "$HERE/tests/support/client.py" \
  keepalive 10.1.0.100 80 15 >"$WORK/keepalive.json" 2>&1 &
KEEPALIVE=$!
PIDS+=("$KEEPALIVE")
sleep 4
echo "demo-ha: before:"
roles
echo "  \$ kill -9 ${DAEMON[a]}      (node a, the active one, dies without a word)"
t0=$(date +%s%N)
kill -KILL "${DAEMON[a]}"
wait "${DAEMON[a]}" 2>/dev/null || true
if wait_log b "ha: this node is now active" 10; then
  echo "  node b logged its takeover $(( ($(date +%s%N) - t0) / 1000000 )) ms after the kill"
fi
echo "demo-ha: after:"
roles
wait "$KEEPALIVE" 2>/dev/null || true
echo "demo-ha: the keep-alive connection across the failover:"
python3 -c '
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
ok, fail, errors = r["ok"], r["fail"], r["errors"]
verdict = "survived" if fail == 0 and not errors else "broke"
print(f"  {ok} requests answered, {fail} failed, errors {errors}: the connection {verdict}")
' "$WORK/keepalive.json" || cat "$WORK/keepalive.json"
printf '  a new connection: '
ip netns exec "$CONS" curl -s --max-time 3 http://10.1.0.100/ || echo "(no answer)"

echo
echo "demo-ha: node a comes back; b stays active (preempt = false), a gets b's flows"
taps_gone a
start_node a
wait_standby a || true
roles

echo
echo "Try it yourself in another shell:"
echo "  ip netns exec $CONS curl http://10.1.0.100/"
echo "  kill -9 ${DAEMON[b]}    # node b, active now: a takes over"
echo "  $CTL --socket $WORK/a/privlink.sock describe-vpc-endpoints    # the same on both nodes"
echo "privlinkd's logs: $WORK/a/privlinkd.log, $WORK/b/privlinkd.log.  Ctrl-C stops the demo and cleans up."
while kill -0 "${DAEMON[a]}" 2>/dev/null || kill -0 "${DAEMON[b]}" 2>/dev/null; do sleep 1; done
echo "demo-ha: both nodes exited"
