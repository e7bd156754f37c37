#!/usr/bin/env bash
# The whole-appliance benchmark, one command (see BENCHMARKS.md):
#
#   net_pcap0 (replays a capture, infinite_rx=1) ══ one forwarding core ══ net_null0 (sink)
#
# on the same two virtual ports and in the same run: privlinkd (one worker, lcore 1) and
# dpdk-testpmd --forward-mode=io, macswap and 5tswap (the I/O limit), for captures of 64-byte
# frames of N client flows to one endpoint; then the setup rate (unique TCP SYNs replayed
# once), memory per flow and privlinkd's resident memory with 1M and 10M flow slots; then
# the update under load (snapshots of 10k and 100k endpoints published while 1k flows
# forward; packets per 10 ms window before, during and after; publish times), and the
# queries under load (a client calling stats and flows back to back while 1k flows
# forward: the same 10 ms windows before, during and after).
# With --peers, also Open vSwitch with DPDK (Debian's ovs-vswitchd-dpdk, a private instance,
# one PMD thread on the same core) on the same two ports and captures, forwarding through a
# conntrack DNAT + SNAT pipeline equivalent to privlinkd's (scripts/bench/ovs.sh,
# scripts/bench/ovs_flows.py): its Mpps and ratios are in the same table.
# With --probes [N] (default 1000), the forward measurement at the smallest --flows count is
# made twice in each run, privlinkd as it is and with a TCP listener of N targets beyond
# the provider prefix (through a gateway) health-checked every 5 s (scripts/bench/probes.py):
# mode privlink+probes, its ratio to privlink (also per second of the worker thread's CPU
# time) and the probes sent per second; then one privlinkd more whose probed listener has
# its checks turned off and on in turn while it forwards (~30 s a run).
# With --sync, the forward measurement at the smallest --flows count and the setup-rate run
# are made twice in each run, privlinkd as it is and as the active node of an HA pair whose
# standby is a sink on this machine (scripts/bench/sync.py: it heartbeats, acknowledges and
# counts the sync datagrams): mode privlink+sync and its ratios to privlink.
# With --cluster "N…" (endpoint counts), the fleet configuration in etcd (issue 13): a
# private etcd on loopback; N endpoints declared to a single privlinkd, its state file
# imported into etcd (privlinkd --import-state); then privlinkd as a cluster node
# forwarding the 1k-flow replay: its load time from etcd at start, and the update-under-
# load measurement (changes through its socket, committed to etcd) with N endpoints.
# Prints the table (median [min–max] of the runs), writes OUT/results.{json,md} and the plot
# OUT/mpps.png (when matplotlib is installed).
#
#   scripts/bench.sh [--smoke] [--runs N] [--flows "1000 100000 1000000"] [--proto udp|tcp|udpfrag|udp6|udp66]
#                    [--out DIR] [--warmup S] [--measure S] [--syn-flows M]
#                    [--modes "io macswap 5tswap"] [--no-setup] [--no-memory] [--no-build]
#                    [--no-plot] [--update "10000 100000"] [--no-update] [--no-queries]
#                    [--query-seconds S] [--query-table FLOWS_PER_WORKER] [--peers]
#                    [--probes [N]] [--sync] [--cluster "100000"]
# (PRIVLINKD=path uses that binary and skips the build; CARGO, TESTPMD, OVS_VSWITCHD
# likewise. --peers installs openvswitch-switch-dpdk through scripts/install-deps.sh
# --peers when it is missing.)
#
# --smoke: 1k flows, one run, privlinkd and testpmd io only, ~12 s; exits non-zero unless
# privlinkd forwarded (tx > 0) and stopped cleanly (no panic). Every wait is bounded; every
# process started here is stopped, and its /var/run/dpdk/<prefix> removed, even on failure.
# Needs root (DPDK), python3, dpdk-testpmd (package dpdk-dev); --peers also Open vSwitch
# (openvswitch-switch-dpdk). Traffic never leaves the two virtual devices.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
HERE=$ROOT/scripts/bench
CARGO=${CARGO:-$(command -v cargo 2>/dev/null || echo "$HOME/.cargo/bin/cargo")}
TESTPMD=${TESTPMD:-dpdk-testpmd}

SMOKE=0
RUNS=3
FLOWS="1000 100000 1000000"
PROTO=udp
OUT=bench-out
WARMUP=2
MEASURE=5
SYN_FLOWS=4000000
MODES="io macswap 5tswap"
DO_SETUP=1
DO_MEMORY=1
UPDATE="10000 100000"
UPDATE_CHANGES=3
QUERIES=1
QUERY_SECONDS=5
QUERY_TABLE=262144
BUILD=1
PLOT=1
PEERS=0
PROBES=0
SYNC=0
CLUSTER=""

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --runs) RUNS=$2; shift ;;
    --flows) FLOWS=$2; shift ;;
    --proto) PROTO=$2; shift ;;
    --out) OUT=$2; shift ;;
    --warmup) WARMUP=$2; shift ;;
    --measure) MEASURE=$2; shift ;;
    --syn-flows) SYN_FLOWS=$2; shift ;;
    --modes) MODES=$2; shift ;;
    --no-setup) DO_SETUP=0 ;;
    --no-memory) DO_MEMORY=0 ;;
    --update) UPDATE=$2; shift ;;
    --no-update) UPDATE="" ;;
    --no-queries) QUERIES=0 ;;
    --query-seconds) QUERY_SECONDS=$2; shift ;;
    --query-table) QUERY_TABLE=$2; shift ;;
    --no-build) BUILD=0 ;;
    --no-plot) PLOT=0 ;;
    --peers) PEERS=1 ;;
    --probes)
      PROBES=1000
      case "${2:-}" in ''|*[!0-9]*) ;; *) PROBES=$2; shift ;; esac ;;
    --sync) SYNC=1 ;;
    --cluster) CLUSTER=$2; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bench: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  RUNS=1 FLOWS=1000 PROTO=udp WARMUP=1 MEASURE=2 MODES=io DO_SETUP=0 DO_MEMORY=0 PLOT=0 UPDATE="" QUERIES=0 PEERS=0 PROBES=0 SYNC=0 CLUSTER=""
fi
case "$PROTO" in udp|tcp|udpfrag|udp6|udp66) ;; *) echo "bench: --proto udp|tcp|udpfrag|udp6|udp66" >&2; exit 2 ;; esac
export BENCH_PROTO=$PROTO
case "$RUNS" in ''|*[!0-9]*|0) echo "bench: --runs N (N >= 1)" >&2; exit 2 ;; esac
[ "$PROBES" -le 65536 ] || { echo "bench: --probes N: at most 65536 targets (tables.maglev_size - 1)" >&2; exit 2; }
# The probed and synced runs go with the smallest flow count.
# shellcheck disable=SC2086 # one flow count a line
PROBES_FLOWS=$(printf '%s\n' $FLOWS | sort -n | head -1)

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
case "$OUT" in *[\"\\\|\&\ ]*) echo "bench: --out path must not contain quotes, |, & or spaces" >&2; exit 2 ;; esac
RAW=$OUT/raw
rm -rf "$RAW" "$OUT/run"
mkdir -p "$RAW" "$OUT/run" "$OUT/pcap"
BLOG=$OUT/bench.log
: > "$BLOG"

log() { echo "[bench $(date +%T)] $*" | tee -a "$BLOG" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "DPDK needs root"
command -v python3 >/dev/null || die "python3 is missing"

# ------------------------------------------------------------------ clean-up, always
PIDS=()
PREFIXES=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null
      for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null
    fi
  done
  for p in "${PREFIXES[@]}"; do
    rm -rf "/var/run/dpdk/$p"
    rm -f /dev/hugepages/"$p"map_* 2>/dev/null
  done
  for p in "${OVS_TMPDIRS[@]}"; do rm -rf "$p"; done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

# shellcheck source=scripts/bench/lib.sh
. "$HERE/lib.sh" # stop_pid
# shellcheck source=scripts/bench/ovs.sh
. "$HERE/ovs.sh" # ovs_find, run_ovs

# ------------------------------------------------------------------ binaries
if [ -n "${PRIVLINKD:-}" ]; then
  BUILD=0
else
  PRIVLINKD=$ROOT/target/release/privlinkd
fi
if [ "$BUILD" = 1 ]; then
  log "cargo build --release --bins"
  "$CARGO" build --release --bins >"$OUT/build.log" 2>&1 || { tail -20 "$OUT/build.log" >&2; die "build failed (see $OUT/build.log)"; }
fi
[ -x "$PRIVLINKD" ] || die "no privlinkd at $PRIVLINKD (build it, or set PRIVLINKD)"
# This script and its helpers (python, sleep, ...) stay on CPU 0, the DPDK main lcore, so
# they are not scheduled onto the forwarding core (lcore 1); the EAL pins its own threads.
if command -v taskset >/dev/null; then
  taskset -pc 0 $$ >/dev/null 2>&1 || log "taskset failed: helpers may share the forwarding core"
fi
if [ "$PEERS" = 1 ] && ! ovs_find; then
  log "Open vSwitch with DPDK is missing: bash scripts/install-deps.sh --peers"
  bash "$ROOT/scripts/install-deps.sh" --peers 2>&1 | tee -a "$BLOG" >&2
  ovs_find || die "--peers needs ovs-vswitchd-dpdk (package openvswitch-switch-dpdk) and the ovs tools"
fi
[ "$PEERS" = 1 ] && log "peer: $OVS_VSWITCHD ($("$OVS_VSWITCHD" --version 2>/dev/null | head -1))"
HAVE_TESTPMD=1
if [ -n "$MODES" ] && ! command -v "$TESTPMD" >/dev/null; then
  log "dpdk-testpmd not found (package dpdk-dev): testpmd modes skipped"
  HAVE_TESTPMD=0
  MODES=""
fi

# ------------------------------------------------------------------ machine
# cycles/packet = TSC Hz / packets per second (the TSC runs at the nominal clock here).
TSC_HZ=$(awk -F: '/^cpu MHz/ { printf "%.0f", $2 * 1000000; exit }' /proc/cpuinfo)
HUGE_KB=$(awk '/^Hugepagesize:/ {print $2}' /proc/meminfo)
[ -f scripts/hugepages.sh ] && { bash scripts/hugepages.sh >>"$BLOG" 2>&1 || true; }
huge_free_mb() {
  if ! grep -q ' /dev/hugepages hugetlbfs' /proc/mounts; then echo 0; return; fi
  awk -v kb="${HUGE_KB:-2048}" '/^HugePages_Free:/ { printf "%d", $2 * kb / 1024 }' /proc/meminfo
}
# EAL memory arguments for a process that needs $1 MB of DPDK memory: hugepages when the
# free ones cover it with 256 MB left for everybody else on the machine, else --no-huge.
# Echoes "mode arg…".
mem_args() {
  local need=$1
  if [ "$(huge_free_mb)" -ge $((need + 256)) ]; then
    echo "hugepages --huge-unlink"
  else
    echo "no-huge --no-huge -m $need"
  fi
}
# One mbuf of privlinkd's and testpmd's default pools (2176 B data room) with the mempool's
# object header and channel padding, rounded up; plus room for everything else. Without
# hugepages DPDK needs more than that (1M mbufs fail at -m 3500, work at 4500): 4 KiB each.
MBUF_BYTES=2688
mb_for_mbufs() { echo $(( $1 * MBUF_BYTES / 1048576 + 256 )); }
mb_nohuge_for_mbufs() { echo $(( $1 * 4096 / 1048576 + 256 )); }

python3 - "$RAW/meta.json" <<EOF
import json, subprocess, time, sys
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True).stdout.strip()
    except Exception: return ""
lscpu = sh("lscpu")
def field(k):
    for l in lscpu.splitlines():
        if l.startswith(k + ":"): return l.split(":", 1)[1].strip()
    return ""
json.dump({
  "date": time.strftime("%Y-%m-%d %H:%M %Z"),
  "cpu": field("Model name"), "cpus": field("CPU(s)"), "l2": field("L2 cache"),
  "l3": field("L3 cache"), "hypervisor": field("Hypervisor vendor"),
  "kernel": sh("uname -r"), "dpdk": sh("pkg-config --modversion libdpdk"),
  "rustc": sh("rustc --version"), "git": sh("git rev-parse --short HEAD") + (" (dirty)" if sh("git status --porcelain") else ""),
  "tsc_hz": int("${TSC_HZ:-0}" or 0), "runs": $RUNS, "warmup": $WARMUP, "measure": $MEASURE,
  "proto": "$PROTO", "smoke": bool($SMOKE), "mem_total": sh("awk '/MemTotal/{print \$2}' /proc/meminfo"),
  "hugepages_free_mb_at_start": int("$(huge_free_mb)" or 0),
}, open(sys.argv[1], "w"), indent=1)
EOF

# ------------------------------------------------------------------ configuration
# privlinkd's mempool (appliance/src/daemon/mod.rs): per port (rx_desc + tx_desc) per worker,
# plus burst·(ports+2)·4 + arp_pending_packets + 2048 = 4·desc + 2816 here.
pool_for_desc() { echo $(( 4 * $1 + 32 * 4 * 4 + 256 + 2048 )); }
PCAP_MAC=02:70:63:61:70:00 # net_pcap's first port: 02:70:63:61:70:<port index>

# Does this privlinkd take a [tables] mbufs key (pool size)? Then big captures fit.
MBUFS_KEY=0
fill_config() { # out-file, then KEY=VALUE pairs for the @KEY@ fields of the template
  python3 - "$HERE/privlink-bench.toml" "$@" <<'EOF'
import os, sys
text = open(sys.argv[1]).read()
out = sys.argv[2]
# IPv6 consumers (--proto udp6): the dual-stack endpoint and its prefix; none otherwise.
# With --proto udp66 the UDP listener's targets are IPv6 too (NAT66): the provider VPC
# gets fd00:b1::/64, the targets fd00:b1::11..26 (the IPv4 ones' last digits, their MACs
# configured) and 16 IPv6 SNAT addresses.
proto = os.environ.get("BENCH_PROTO")
v6 = proto in ("udp6", "udp66")
if proto == "udp66":
    import re
    neigh6 = ",\n".join(
        '    {{ ip = "fd00:b1::{0}", mac = "02:00:00:00:02:{1:02x}" }}'.format(n, int(n))
        for n in range(11, 27))
    text = text.replace('address = "10.2.0.1/24"\n',
        'address = "10.2.0.1/24"\naddress6 = "fd00:b1::1/64"\nstatic_neighbours6 = [\n'
        + neigh6 + ',\n]\n', 1)
    snat6 = ", ".join('"fd00:b1::1{:02x}"'.format(i) for i in range(16))
    text = re.sub(r'(snat_addresses = \[[^\]]*)\]', lambda m: m.group(1) + ", " + snat6 + "]", text, 1)
    text = re.sub(r'\{ ip = "10\.2\.0\.(\d+)", port = 9000 \}', r'{ ip = "fd00:b1::\1", port = 9000 }', text)
fields = {
    "ADDRESS6": 'address6 = "fd00:c1::1/64"' if v6 else "",
    "SERVICE_TYPES": 'supported_ip_address_types = ["ipv4", "ipv6"]' if v6 else "",
    "ENDPOINT6": 'ip_address_type = "dualstack"\nip6 = "fd00:c1::64"' if v6 else "",
}
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    fields[k] = v
for k, v in fields.items():
    text = text.replace("@" + k + "@", v)
open(out, "w").write(text)
EOF
}
toml_args() { local a s=""; for a in "$@"; do s+="${s:+, }\"$a\""; done; echo "$s"; }
probe=$OUT/run/probe
mkdir -p "$probe"
fill_config "$probe/privlink.toml" EAL_ARGS='"-l", "0,1"' RX_DESC=1024 TX_DESC=1024 \
  DIR="$probe" FLOWS_PER_WORKER=1024 EXTRA_TABLES="mbufs = 8192"
if "$PRIVLINKD" --config "$probe/privlink.toml" --check >/dev/null 2>&1; then
  MBUFS_KEY=1
  log "privlinkd takes [tables] mbufs: captures of any size fit its pool"
fi
fill_config "$probe/privlink.toml" EAL_ARGS='"-l", "0,1"' RX_DESC=1024 TX_DESC=1024 \
  DIR="$probe" FLOWS_PER_WORKER=1024 EXTRA_TABLES=""
"$PRIVLINKD" --config "$probe/privlink.toml" --check >"$probe/check.log" 2>&1 \
  || { cat "$probe/check.log" >&2; die "the bench configuration does not validate"; }

pow2_at_least() { local n=1; while [ "$n" -lt "$1" ]; do n=$((n * 2)); done; echo "$n"; }

capture() { # kind flows -> path (generated once, kept in OUT/pcap)
  local kind=$1 n=$2 f="$OUT/pcap/$1-$2.pcap"
  if [ ! -s "$f" ]; then
    python3 "$HERE/gen_pcap.py" --kind "$kind" --flows "$n" --out "$f" --dst-mac "$PCAP_MAC" >>"$BLOG" 2>&1 \
      || die "gen_pcap $kind $n failed"
  fi
  echo "$f"
}
pcap_packets() { # records of a classic pcap (their lengths differ between kinds)
  python3 -c '
import struct, sys
f = open(sys.argv[1], "rb"); f.seek(24); n = 0
while True:
    h = f.read(16)
    if len(h) < 16:
        break
    f.seek(struct.unpack("<IIII", h)[2], 1); n += 1
print(n)' "$1"
}

# ------------------------------------------------------------------ privlinkd
SEQ=0
FAILED=0
PL_PID=""
# next_prefix LETTER: a DPDK --file-prefix of this run's in PREFIX, recorded for the
# clean-up (not in a $(…) subshell: SEQ and PREFIXES must change here).
next_prefix() {
  SEQ=$((SEQ + 1))
  PREFIX="plbench$$$1$SEQ"
  PREFIXES+=("$PREFIX")
}
# start_privlinkd DIR PCAP_VDEV FLOWS_PER_WORKER DESC EXTRA_TABLES MEMARGS... ; sets PL_PID
start_privlinkd() {
  local dir=$1 vdev=$2 fpw=$3 desc=$4 extra=$5
  shift 5
  next_prefix p
  local prefix=$PREFIX
  rm -rf "$dir"
  mkdir -p "$dir/state"
  local eal
  eal=$(toml_args -l 0,1 --no-pci "$@" "--file-prefix=$prefix" "--vdev=$vdev" --vdev=net_null0,no-rx=1)
  fill_config "$dir/privlink.toml" EAL_ARGS="$eal" RX_DESC="$desc" TX_DESC="$desc" DIR="$dir" \
    FLOWS_PER_WORKER="$fpw" EXTRA_TABLES="$extra"
  if [ -n "${CONFIG_HOOK:-}" ]; then
    $CONFIG_HOOK "$dir/privlink.toml" || { log "configuration hook failed: $CONFIG_HOOK"; return 1; }
  fi
  RUST_LOG=info "$PRIVLINKD" --config "$dir/privlink.toml" >"$dir/privlinkd.log" 2>&1 &
  PL_PID=$!
  PIDS+=("$PL_PID")
  local deadline=$((SECONDS + 60))
  while [ $SECONDS -lt $deadline ]; do
    grep -q "privlinkd ready" "$dir/privlinkd.log" && break
    kill -0 "$PL_PID" 2>/dev/null || break
    sleep 0.05
  done
  if ! grep -q "privlinkd ready" "$dir/privlinkd.log"; then
    log "privlinkd did not start (see $dir/privlinkd.log):"
    tail -5 "$dir/privlinkd.log" | tee -a "$BLOG" >&2
    stop_pid "$PL_PID" 5
    rm -rf "/var/run/dpdk/$prefix"
    return 1
  fi
  local mac
  mac=$(sed -n 's/.*port net_pcap0 .*mac \([0-9a-f:]*\).*/\1/p' "$dir/privlinkd.log" | head -1)
  if [ -n "$mac" ] && [ "$mac" != "$PCAP_MAC" ]; then
    log "net_pcap0 has MAC $mac, the captures were made for $PCAP_MAC: every frame would be not_for_us"
    stop_pid "$PL_PID" 5
    return 1
  fi
  return 0
}
# finish_privlinkd DIR -> stops it; returns non-zero on a panic or an unclean exit
finish_privlinkd() {
  local dir=$1 rc
  stop_pid "$PL_PID" 20
  rc=$STOP_RC
  rm -rf "/var/run/dpdk/${PREFIXES[-1]}"
  if grep -q "panicked" "$dir/privlinkd.log" || [ "$rc" != 0 ]; then
    log "privlinkd exited with status $rc$(grep -q panicked "$dir/privlinkd.log" && echo ', after a panic') (see $dir/privlinkd.log)"
    return 1
  fi
  return 0
}
vm_field() { awk -v k="$2:" '$1 == k { printf "%.0f\n", $2 * 1024 }' "/proc/$1/status" 2>/dev/null; }

# ------------------------------------------------------------------ testpmd
# run_testpmd DIR MODE VDEV MBUFS WARMUP MEASURE MEMARGS... -> JSON in TP_JSON (not run in
# a $(…) subshell, so the clean-up trap knows the process)
run_testpmd() {
  local dir=$1 mode=$2 vdev=$3 mbufs=$4 warm=$5 meas=$6
  shift 6
  next_prefix t
  local prefix=$PREFIX
  rm -rf "$dir"
  mkdir -p "$dir"
  "$TESTPMD" -l 0,1 --no-pci "$@" "--file-prefix=$prefix" "--vdev=$vdev" --vdev=net_null0,no-rx=1 \
    -- --forward-mode="$mode" --nb-cores=1 --stats-period=1 --total-num-mbufs="$mbufs" \
    --no-mlockall >"$dir/testpmd.log" 2>&1 </dev/null &
  local pid=$!
  PIDS+=("$pid")
  local once=""
  case "$vdev" in *infinite_rx=1*) ;; *) once=--once ;; esac
  TP_JSON=$(python3 "$HERE/harness.py" testpmd-watch "$dir/testpmd.log" --pid "$pid" \
    --warmup "$warm" --measure "$meas" $once)
  kill -INT "$pid" 2>/dev/null
  stop_pid "$pid" 15
  rm -rf "/var/run/dpdk/$prefix"
}

jq_get() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=d.get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }
emit() { echo "$2" >>"$RAW/$1.jsonl"; }

# ------------------------------------------------------------------ forwarding
KIND=$PROTO
[ "$PROTO" = tcp ] && KIND=tcp
[ "$PROTO" = udp66 ] && KIND=udp6 # the same capture: only the targets' family differs
declare -A PCAPS PLDESC PLEXTRA PLNOTE MEM_PL MEM_TP TPMBUFS
for n in $FLOWS; do
  f=$(capture "$KIND" "$n")
  p=$(pcap_packets "$f")
  PCAPS[$n]=$f
  need=$((p + 2048))
  if [ "$MBUFS_KEY" = 1 ]; then
    PLDESC[$n]=1024
    PLEXTRA[$n]="mbufs = $(( $(pool_for_desc 1024) + need ))"
    plpool=$(( $(pool_for_desc 1024) + need ))
  else
    d=1024
    while [ "$(pool_for_desc $d)" -lt "$need" ] && [ $d -lt 32768 ]; do d=$((d * 2)); done
    PLDESC[$n]=$d
    PLEXTRA[$n]=""
    plpool=$(pool_for_desc $d)
    if [ "$plpool" -lt "$need" ]; then
      PLNOTE[$n]="privlinkd not run: the capture holds $p packets, its pool holds at most $plpool mbufs (rx_desc = tx_desc = 32768); a [tables] mbufs key is needed"
      log "${PLNOTE[$n]}"
      plpool=0
    fi
  fi
  TPMBUFS[$n]=$((p + 16384))
  # Same memory kind for both programs at one flow count, so their ratio is fair.
  want_mb=$(mb_for_mbufs $(( plpool > TPMBUFS[$n] ? plpool : TPMBUFS[$n] )))
  m=$(mem_args "$want_mb")
  MEM_PL[$n]="${m#* }"
  MEM_TP[$n]="${m#* }"
  if [ "${m%% *}" = no-huge ]; then
    MEM_PL[$n]="--no-huge -m $(mb_nohuge_for_mbufs $((plpool > 0 ? plpool : 8192)))"
    MEM_TP[$n]="--no-huge -m $(mb_nohuge_for_mbufs "${TPMBUFS[$n]}")"
  fi
  log "flows $n: capture $f ($p packets), memory ${m%% *}"
done

# ------------------------------------------------------------------ HA sync sink (--sync)
SYNC_KEY=$(python3 -c 'import os; print(os.urandom(32).hex())')
SYNC_NODE_PORT=$((40000 + ($$ % 10000) * 2))
SYNC_SINK_PORT=$((SYNC_NODE_PORT + 1))
SYNC_HOOK="python3 $HERE/sync.py config --key $SYNC_KEY --node-port $SYNC_NODE_PORT --sink-port $SYNC_SINK_PORT"
SINK_PID=""
# sync_sink_start DIR: the sink, before privlinkd (its first heartbeat makes privlinkd active).
sync_sink_start() {
  mkdir -p "$1"
  rm -f "$1/sink.json"
  python3 "$HERE/sync.py" sink --listen "$SYNC_SINK_PORT" --peer "$SYNC_NODE_PORT" \
    --key "$SYNC_KEY" --out "$1/sink.json" 2>"$1/sink.log" &
  SINK_PID=$!
  PIDS+=("$SINK_PID")
  sleep 0.2
}
# sync_node DIR: the node's HA figures (stats through its socket), while it runs; JSON.
sync_node() {
  python3 - "$1/privlink.sock" "$1/stats.json" <<'EOF2'
import json, sys
sys.dont_write_bytecode = True
sys.path.insert(0, "scripts/bench")
import update
out = {}
try:
    st = update.Mgmt(sys.argv[1], timeout=10).call("stats", {})
    ha = st.get("HighAvailability") or {}
    out["role"] = ha.get("Role")
    out["records_sent"] = (ha.get("Records") or {}).get("Sent")
    out["unacknowledged"] = ha.get("Unacknowledged")
    out["sync_dropped"] = (st.get("Totals") or {}).get("sync_dropped")
except Exception as e:
    out["error"] = str(e)
print(json.dumps(out))
EOF2
}
# sync_sink_finish DIR NODE_JSON: stops the sink; echoes NODE_JSON with the sink's counts.
sync_sink_finish() {
  stop_pid "$SINK_PID" 10
  python3 -c '
import json, os, sys
n = json.loads(sys.argv[2] or "{}")
p = os.path.join(sys.argv[1], "sink.json")
n["sink"] = json.load(open(p)) if os.path.exists(p) else {"error": "the sink wrote nothing"}
print(json.dumps(n))' "$1" "$2"
}

# forward_privlink MODE N RUN MEMKIND: one privlinkd measurement of the N-flow replay,
# recorded as MODE: privlink, or privlink+probes (the configuration hook adds the probed
# listener, scripts/bench/probes.py). At the --probes flow count both modes are sampled by
# probes.py (harness.py's sample plus the probe counters), so the pair is measured alike.
forward_privlink() {
  local mode=$1 n=$2 run=$3 memkind=$4 f=${PCAPS[$2]} dir s rss clean pps note nf dd ok
  local sampler=("$HERE/harness.py" sample) targets=0 label=${1/privlink/privlinkd}
  dir=$OUT/run/r$run-$n-${mode/+/-}
  if [ "$PROBES" -gt 0 ] && [ "$n" = "$PROBES_FLOWS" ]; then
    sampler=("$HERE/probes.py" sample)
  fi
  [ "$mode" = privlink+probes ] && targets=$PROBES
  local extra='{}' synced=0
  if [ "$mode" = privlink+sync ]; then
    synced=1
    sync_sink_start "$dir.sink"
    CONFIG_HOOK=$SYNC_HOOK
  fi
  if [ -n "${PLNOTE[$n]:-}" ]; then
    emit forward "{\"kind\":\"forward\",\"mode\":\"$mode\",\"proto\":\"$PROTO\",\"flows\":$n,\"run\":$run,\"mpps\":null,\"note\":\"${PLNOTE[$n]}\"}"
    return
  fi
  # shellcheck disable=SC2086
  if ! start_privlinkd "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" "$(pow2_at_least $((2 * n)))" \
      "${PLDESC[$n]}" "${PLEXTRA[$n]}" ${MEM_PL[$n]}; then
    FAILED=1
    [ "$synced" = 1 ] && { CONFIG_HOOK=""; sync_sink_finish "$dir.sink" "" >/dev/null; }
    return
  fi
  [ "$synced" = 1 ] && CONFIG_HOOK=""
  [ "${sampler[0]}" = "$HERE/probes.py" ] && sampler+=(--pid "$PL_PID")
  s=$(python3 "${sampler[@]}" "$dir/stats.json" --warmup "$WARMUP" --measure "$MEASURE")
  rss=$(vm_field "$PL_PID" VmRSS)
  [ "$synced" = 1 ] && extra=$(sync_node "$dir")
  if finish_privlinkd "$dir"; then clean=true; else clean=false; FAILED=1; fi
  [ "$synced" = 1 ] && extra=$(sync_sink_finish "$dir.sink" "$extra")
  pps=$(jq_get "$s" tx_pps)
  note=""
  nf=$(jq_get "$s" new_flows)
  [ "$nf" != "$n" ] && note="new_flows $nf, expected $n"
  dd=$(jq_get "$s" drops_delta)
  [ "${dd:-0}" != 0 ] && note="${note:+$note; }drops during the measurement: $(jq_get "$s" drops)"
  ok=$(jq_get "$s" ok)
  [ "$ok" = True ] || { FAILED=1; log "$label run $run, $n flows: no forwarding measured: $s"; }
  emit forward "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); pps=s.get("tx_pps")
r={"kind":"forward","mode":sys.argv[9],"proto":sys.argv[2],"flows":int(sys.argv[3]),
 "run":int(sys.argv[4]),"mpps":pps/1e6 if pps else None,"clean_exit":sys.argv[5]=="true",
 "memory":sys.argv[6],"vmrss":int(sys.argv[7] or 0),"note":sys.argv[8],"sample":s}
if int(sys.argv[10]): r["probe_targets"]=int(sys.argv[10])
r.update(json.loads(sys.argv[11]))
print(json.dumps(r))' \
    "$s" "$PROTO" "$n" "$run" "$clean" "$memkind" "${rss:-0}" "$note" "$mode" "$targets" "$extra")"
  local probes=""
  [ "${sampler[0]}" = "$HERE/probes.py" ] && probes=$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); c=s.get("tx_per_cpu_s")
print(", %s probes sent in %s s; %s Mpps per worker CPU second (worker on its core %s of the time)"
      % (s.get("probes_sent_delta"), s.get("probes_seconds"), "%.2f" % (c / 1e6) if c else "n/a",
         "%.0f %%" % (100 * s["cpu_share"]) if s.get("cpu_share") else "n/a"))' "$s")
  [ "$synced" = 1 ] && probes=$(python3 -c '
import json,sys
e=json.loads(sys.argv[1]); k=e.get("sink") or {}
print(", role %s, %s records sent, %s received by the sink, sync_dropped %s"
      % (e.get("role"), e.get("records_sent"), k.get("records"), e.get("sync_dropped")))' "$extra")
  log "run $run, $n flows: $label $(python3 -c "print('%.2f' % (float('${pps:-0}' or 0)/1e6))") Mpps$probes${note:+ ($note)}"
}

# probes_toggle N RUN: one privlinkd with the probed listener, its checks turned off and on
# in turn while it forwards the N-flow replay (probes.py toggle): the same comparison
# within one process.
probes_toggle() {
  local n=$1 run=$2 dir s
  dir=$OUT/run/r$run-$n-probes-toggle
  [ -z "${PLNOTE[$n]:-}" ] || return
  CONFIG_HOOK=$PROBES_HOOK
  # shellcheck disable=SC2086
  if ! start_privlinkd "$dir" "net_pcap0,rx_pcap=${PCAPS[$n]},infinite_rx=1" \
      "$(pow2_at_least $((2 * n)))" "${PLDESC[$n]}" "${PLEXTRA[$n]}" ${MEM_PL[$n]}; then
    CONFIG_HOOK=""
    FAILED=1
    return
  fi
  CONFIG_HOOK=""
  s=$(python3 "$HERE/probes.py" toggle "$dir" --pid "$PL_PID" --warmup "$WARMUP")
  finish_privlinkd "$dir" || FAILED=1
  [ "$(jq_get "$s" ok)" = True ] || { FAILED=1; log "probes toggle run $run: $(echo "$s" | cut -c1-300)"; }
  emit probes_toggle "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); s.update({"kind":"probes_toggle","proto":sys.argv[2],"flows":int(sys.argv[3]),
 "run":int(sys.argv[4]),"probe_targets":int(sys.argv[5])})
print(json.dumps(s))' "$s" "$PROTO" "$n" "$run" "$PROBES")"
  log "run $run, $n flows: probes on / off in one privlinkd: $(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); r=s.get("ratios") or []
m=lambda k: (s.get(k) or {}).get("median") or 0
c=s.get("cpu_ratios") or []
print("tx rate on / off %s; per worker CPU second %s; probes sent/s %.0f on, %.1f off"
      % (" ".join("%.4f" % x for x in r) or "n/a", " ".join("%.4f" % x for x in c) or "n/a",
         m("on_probes_pps"), m("off_probes_pps")))' "$s")"
}

PROBES_HOOK="python3 $HERE/probes.py config --targets $PROBES"
for ((run = 1; run <= RUNS; run++)); do
  for n in $FLOWS; do
    f=${PCAPS[$n]}
    memkind=hugepages
    case "${MEM_PL[$n]}" in --no-huge*) memkind=no-huge ;; esac
    if { [ "$PROBES" -gt 0 ] || [ "$SYNC" = 1 ]; } && [ "$n" = "$PROBES_FLOWS" ]; then
      # With and without the probes (the sync) back to back, in turn first (a drift over
      # the round then weighs on both alike).
      variants="privlink"
      [ "$PROBES" -gt 0 ] && variants="$variants privlink+probes"
      [ "$SYNC" = 1 ] && variants="$variants privlink+sync"
      ((run % 2)) || variants=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' ')
      for mode in $variants; do
        [ "$mode" = privlink+probes ] && CONFIG_HOOK=$PROBES_HOOK
        forward_privlink "$mode" "$n" "$run" "$memkind"
        CONFIG_HOOK=""
      done
      [ "$PROBES" -gt 0 ] && probes_toggle "$n" "$run"
    else
      forward_privlink privlink "$n" "$run" "$memkind"
    fi
    for mode in $MODES; do
      dir=$OUT/run/r$run-$n-$mode
      # shellcheck disable=SC2086
      run_testpmd "$dir" "$mode" "net_pcap0,rx_pcap=$f,infinite_rx=1" "${TPMBUFS[$n]}" "$WARMUP" "$MEASURE" ${MEM_TP[$n]}
      s=$TP_JSON
      pps=$(jq_get "$s" tx_pps)
      [ -n "$pps" ] || log "testpmd $mode, $n flows: no readings (see $dir/testpmd.log)"
      emit forward "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); pps=s.get("tx_pps")
print(json.dumps({"kind":"forward","mode":sys.argv[2],"proto":sys.argv[3],"flows":int(sys.argv[4]),
 "run":int(sys.argv[5]),"mpps":pps/1e6 if pps else None,"memory":sys.argv[6],"sample":s}))' \
        "$s" "$mode" "$PROTO" "$n" "$run" "$memkind")"
      log "run $run, $n flows: testpmd $mode $(python3 -c "print('%.2f' % (float('${pps:-0}' or 0)/1e6))") Mpps"
    done
    if [ "$PEERS" = 1 ]; then
      dir=$OUT/run/r$run-$n-ovs
      run_ovs "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" "$(pcap_packets "$f")" "$memkind" \
        "$WARMUP" "$MEASURE" "$OUT/run/probe/privlink.toml"
      s=$OVS_JSON
      note=$OVS_NOTE
      if [ "$(jq_get "$s" ok)" = True ]; then
        c=$(jq_get "$s" conntrack)
        [ "$c" != $((2 * n)) ] && note="${note:+$note; }OVS conntrack held $c connections, expected $((2 * n)) (two zones)"
        # rx and tx are two counters read one after the other while the PMD forwards: a
        # few bursts apart at most. More than that (or 0.1 %) is loss.
        l=$(jq_get "$s" lost_delta)
        r=$(jq_get "$s" rx_delta)
        [ "${l:-0}" -gt 256 ] && [ "${l:-0}" -gt $(( ${r:-0} / 1000 )) ] \
          && note="${note:+$note; }OVS lost $l packets during the measurement"
      else
        [ -n "$note" ] || note="OVS: no forwarding measured: $(echo "$s" | cut -c1-200)"
      fi
      emit forward "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); pps=s.get("tx_pps")
print(json.dumps({"kind":"forward","mode":"ovs","proto":sys.argv[2],"flows":int(sys.argv[3]),
 "run":int(sys.argv[4]),"mpps":pps/1e6 if pps else None,"memory":sys.argv[5],"note":sys.argv[6],
 "sample":s}))' "$s" "$PROTO" "$n" "$run" "${OVS_MEMORY:-$memkind}" "$note")"
      pps=$(jq_get "$s" tx_pps)
      if [ -n "$pps" ]; then
        log "run $run, $n flows: OVS-DPDK ct NAT $(python3 -c "print('%.3f' % (float('$pps')/1e6))") Mpps${note:+ ($note)}"
      else
        log "run $run, $n flows: OVS-DPDK ct NAT not measured: $note"
      fi
    fi
  done
done

# ------------------------------------------------------------------ setup rate
if [ "$DO_SETUP" = 1 ]; then
  f=$(capture syn "$SYN_FLOWS")
  f3=$OUT/pcap/syn-$SYN_FLOWS-x3.pcap
  if [ "$HAVE_TESTPMD" = 1 ] && [ ! -s "$f3" ]; then
    python3 -c '
import shutil, sys
with open(sys.argv[2] + ".tmp", "wb") as out:
    for i in range(3):
        with open(sys.argv[1], "rb") as f:
            if i:
                f.seek(24)  # one global header
            shutil.copyfileobj(f, out, 1 << 22)
import os; os.replace(sys.argv[2] + ".tmp", sys.argv[2])' "$f" "$f3" || die "cannot write $f3"
  fi
  fpw=$(pow2_at_least $((2 * SYN_FLOWS)))
  # setup_run MODE RUN: privlink, or privlink+sync (the active node of a pair with a sink)
  setup_run() {
    local mode=$1 run=$2 dir s io extra='{}'
    dir=$OUT/run/r$run-setup
    [ "$mode" = privlink+sync ] && { dir=$dir-sync; sync_sink_start "$dir.sink"; CONFIG_HOOK=$SYNC_HOOK; }
    # shellcheck disable=SC2046
    if start_privlinkd "$dir" "net_pcap0,rx_pcap=$f" "$fpw" 1024 "" $(mem_args 200 | cut -d' ' -f2-); then
      CONFIG_HOOK=""
      s=$(python3 "$HERE/harness.py" setup "$dir/stats.json" --expect "$SYN_FLOWS" --deadline 120)
      [ "$mode" = privlink+sync ] && extra=$(sync_node "$dir")
      finish_privlinkd "$dir" || FAILED=1
    else
      CONFIG_HOOK=""
      s='{"ok": false}'
      FAILED=1
    fi
    [ "$mode" = privlink+sync ] && extra=$(sync_sink_finish "$dir.sink" "$extra")
    io='{}'
    if [ "$HAVE_TESTPMD" = 1 ] && [ "$mode" = privlink ]; then
      # The replay limit: testpmd io reading the same SYNs from the file once, three times
      # over (so that whole statistics periods fall inside the replay).
      # shellcheck disable=SC2046
      run_testpmd "$OUT/run/r$run-setup-io" io "net_pcap0,rx_pcap=$f3" 16384 0 60 $(mem_args 200 | cut -d' ' -f2-)
      io=$TP_JSON
    fi
    emit setup "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); io=json.loads(sys.argv[2])
s.update({"kind":"setup","mode":sys.argv[4],"run":int(sys.argv[3])})
if sys.argv[4] == "privlink": s.update({"io_pps":io.get("tx_pps"),"io_readings":io.get("readings")})
s.update(json.loads(sys.argv[5]))
if s.get("error"): s["note"]=s["error"]
print(json.dumps(s))' "$s" "$io" "$run" "$mode" "$extra")"
    if [ "$mode" = privlink ]; then
      log "run $run: setup $(jq_get "$s" rate) new flows/s ($(jq_get "$s" new_flows) of $SYN_FLOWS), io replay $(jq_get "$io" tx_pps) pps"
    else
      log "run $run: setup with sync $(jq_get "$s" rate) new flows/s ($(jq_get "$s" new_flows) of $SYN_FLOWS); $(python3 -c '
import json,sys
e=json.loads(sys.argv[1]); k=e.get("sink") or {}
print("role %s, %s records sent, %s received by the sink (%s seqs missed), sync_dropped %s"
      % (e.get("role"), e.get("records_sent"), k.get("records"), k.get("seqs_missed"), e.get("sync_dropped")))' "$extra")"
    fi
  }
  for ((run = 1; run <= RUNS; run++)); do
    if [ "$SYNC" = 1 ]; then
      for mode in $( ((run % 2)) && echo privlink privlink+sync || echo privlink+sync privlink); do
        setup_run "$mode" "$run"
      done
    else
      setup_run privlink "$run"
    fi
  done
fi

# ------------------------------------------------------------------ memory
if [ "$DO_MEMORY" = 1 ]; then
  log "memory per flow: examples/flow_memory (1M and 10M flows)"
  if "$CARGO" build --release -p appliance --example flow_memory >>"$OUT/build.log" 2>&1; then
    timeout 300 "$ROOT/target/release/examples/flow_memory" 1000000 10000000 2>&1 | tee -a "$BLOG" |
      sed -n 's/^flow_memory //p' | while read -r j; do
        emit memory "$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["kind"]="memory"; print(json.dumps(d))' "$j")"
      done
  else
    log "flow_memory example did not build (see $OUT/build.log)"
  fi
  f=$(capture udp 1000)
  for fpw in 1024 1000000 10000000; do
    dir=$OUT/run/rss-$fpw
    # shellcheck disable=SC2046
    if start_privlinkd "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" "$fpw" 1024 "" $(mem_args 200 | cut -d' ' -f2-); then
      # The worker builds (and writes) its flow table before its first packet: wait for
      # forwarding to start, then read the resident memory.
      deadline=$((SECONDS + 60))
      while [ $SECONDS -lt $deadline ]; do
        tx=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["total"]["tx_packets"])' "$dir/stats.json" 2>/dev/null)
        [ "${tx:-0}" -gt 1000 ] && break
        sleep 0.2
      done
      sleep 1
      rss=$(vm_field "$PL_PID" VmRSS)
      huge=$(vm_field "$PL_PID" HugetlbPages)
      finish_privlinkd "$dir" || FAILED=1
      emit rss "{\"kind\":\"rss\",\"flows_per_worker\":$fpw,\"vmrss\":${rss:-0},\"hugetlb\":${huge:-0}}"
      log "privlinkd flows_per_worker=$fpw: VmRSS $((${rss:-0} / 1048576)) MiB, hugepages $((${huge:-0} / 1048576)) MiB"
    else
      FAILED=1
    fi
  done
fi

# ------------------------------------------------------------------ update under load
if [ -n "$UPDATE" ]; then
  f=$(capture udp 1000)
  for ((run = 1; run <= RUNS; run++)); do
    for n in $UPDATE; do
      dir=$OUT/run/r$run-update-$n
      CONFIG_HOOK="python3 $HERE/update.py config --endpoints $n"
      # shellcheck disable=SC2046
      if start_privlinkd "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" 2048 1024 \
          "mbufs = $(( $(pool_for_desc 1024) + $(pcap_packets "$f") + 2048 ))" \
          $(mem_args 400 | cut -d' ' -f2-); then
        CONFIG_HOOK=""
        s=$(python3 "$HERE/update.py" run "$dir" --changes "$UPDATE_CHANGES" --warmup "$WARMUP")
        finish_privlinkd "$dir" || FAILED=1
        [ "$(jq_get "$s" ok)" = True ] || { FAILED=1; log "update run $run, $n endpoints: $(echo "$s" | cut -c1-300)"; }
        emit update "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); s.update({"kind":"update","run":int(sys.argv[2]),"declared":int(sys.argv[3])})
print(json.dumps(s))' "$s" "$run" "$n")"
        log "run $run, $n endpoints: publish $(jq_get "$s" publish_ms) ms; packets/10 ms before $(jq_get "$s" before_median), during min $(jq_get "$s" during_min), after $(jq_get "$s" after_median)"
      else
        CONFIG_HOOK=""
        FAILED=1
      fi
    done
  done
  python3 "$HERE/update.py" table "$OUT" | tee -a "$BLOG"
  [ "$PLOT" = 1 ] && python3 "$HERE/update.py" plot "$OUT" | tee -a "$BLOG"
fi

# ------------------------------------------------------------------ fleet configuration in etcd
if [ -n "$CLUSTER" ]; then
  command -v etcd >/dev/null || die "--cluster needs etcd (package etcd-server: bash scripts/install-deps.sh)"
  f=$(capture udp 1000)
  ETCD_PORT=$((30000 + ($$ % 10000)))
  ETCD_DIR=$OUT/run/etcd
  rm -rf "$ETCD_DIR"
  mkdir -p "$ETCD_DIR"
  etcd --name bench --data-dir "$ETCD_DIR/data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "bench=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --quota-backend-bytes 8589934592 --log-level warn >"$ETCD_DIR/etcd.log" 2>&1 &
  ETCD_PID=$!
  PIDS+=("$ETCD_PID")
  for _ in $(seq 1 100); do
    curl -sf -m 1 -X POST -d '{"key":"AA=="}' "http://127.0.0.1:$ETCD_PORT/v3/kv/range" >/dev/null && break
    sleep 0.1
  done
  cluster_hook() { # the update-under-load configuration, then [cluster] on it
    python3 "$HERE/update.py" config --endpoints "$CLUSTER_N" "$1" || return 1
    printf '\n[cluster]\netcd = ["http://127.0.0.1:%s"]\nprefix = "/bench-%s/"\n' "$ETCD_PORT" "$CLUSTER_N" >>"$1"
  }
  seed_hook() { python3 "$HERE/update.py" config --endpoints "$CLUSTER_N" "$1"; }
  for n in $CLUSTER; do
    CLUSTER_N=$n
    mbufs="mbufs = $(( $(pool_for_desc 1024) + $(pcap_packets "$f") + 2048 ))"
    # The single node whose state file is imported.
    seed=$OUT/run/cluster-$n-seed
    CONFIG_HOOK=seed_hook
    # shellcheck disable=SC2046
    if ! start_privlinkd "$seed" "net_pcap0,rx_pcap=$f,infinite_rx=1" 2048 1024 "$mbufs" $(mem_args 400 | cut -d' ' -f2-); then
      CONFIG_HOOK=""
      FAILED=1
      continue
    fi
    CONFIG_HOOK=""
    finish_privlinkd "$seed" || FAILED=1
    cp "$seed/privlink.toml" "$seed/cluster.toml"
    printf '\n[cluster]\netcd = ["http://127.0.0.1:%s"]\nprefix = "/bench-%s/"\n' "$ETCD_PORT" "$n" >>"$seed/cluster.toml"
    t0=$(date +%s.%N)
    imp=$("$PRIVLINKD" --config "$seed/cluster.toml" --import-state "$seed/state" 2>&1) || { log "import failed: $imp"; FAILED=1; continue; }
    import_s=$(python3 -c "import time; print(round(time.time() - $t0, 2))")
    log "cluster $n endpoints: $imp"
    dir=$OUT/run/cluster-$n
    CONFIG_HOOK=cluster_hook
    # shellcheck disable=SC2046
    if start_privlinkd "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" 2048 1024 "$mbufs" $(mem_args 400 | cut -d' ' -f2-); then
      CONFIG_HOOK=""
      s=$(python3 "$HERE/update.py" run "$dir" --changes "$UPDATE_CHANGES" --warmup "$WARMUP")
      finish_privlinkd "$dir" || FAILED=1
      [ "$(jq_get "$s" ok)" = True ] || { FAILED=1; log "cluster $n endpoints: $(echo "$s" | cut -c1-300)"; }
      load_ms=$(sed -n 's/.*cluster: loaded .* from etcd in \([0-9]*\) ms.*/\1/p' "$dir/privlinkd.log" | head -1)
      commit_ms=$(sed -n 's/.*committed to etcd (revision [0-9]*) in \([0-9.]*\) ms.*/\1/p' "$dir/privlinkd.log" | tr '\n' ' ')
      emit cluster "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); s.pop("series", None)
s.update({"kind":"cluster","declared":int(sys.argv[2]),"load_ms":float(sys.argv[3] or "nan"),
          "import_s":float(sys.argv[4]),"commit_ms":[float(x) for x in sys.argv[5].split()]})
print(json.dumps(s))' "$s" "$n" "${load_ms:-}" "$import_s" "$commit_ms")"
      log "cluster $n endpoints: import ${import_s} s; load at start ${load_ms:-?} ms; changes: publish $(jq_get "$s" publish_ms) ms, commit to etcd ${commit_ms}ms, round trip $(jq_get "$s" rtt_ms) ms; packets/10 ms before $(jq_get "$s" before_median), during min $(jq_get "$s" during_min), after $(jq_get "$s" after_median)"
    else
      CONFIG_HOOK=""
      FAILED=1
    fi
  done
  stop_pid "$ETCD_PID" 10
fi

# ------------------------------------------------------------------ queries under load
# A client calls stats and flows back to back while the replay forwards: the 10 ms
# windows during the calls must match those before and after.
if [ "$QUERIES" = 1 ]; then
  f=$(capture udp 1000)
  for ((run = 1; run <= RUNS; run++)); do
    dir=$OUT/run/r$run-queries
    CONFIG_HOOK="python3 $HERE/update.py config --endpoints 0"
    # shellcheck disable=SC2046
    # The default flow table (262,144 slots) unless told: what a walk of it would cost is
    # the point.
    if start_privlinkd "$dir" "net_pcap0,rx_pcap=$f,infinite_rx=1" "$QUERY_TABLE" 1024 \
        "mbufs = $(( $(pool_for_desc 1024) + $(pcap_packets "$f") + 2048 ))" \
        $(mem_args 400 | cut -d' ' -f2-); then
      CONFIG_HOOK=""
      s=$(python3 "$HERE/update.py" queries "$dir" --seconds "$QUERY_SECONDS" --warmup "$WARMUP")
      finish_privlinkd "$dir" || FAILED=1
      [ "$(jq_get "$s" ok)" = True ] || { FAILED=1; log "queries run $run: $(echo "$s" | cut -c1-300)"; }
      emit queries "$(python3 -c '
import json,sys
s=json.loads(sys.argv[1]); s.update({"kind":"queries","run":int(sys.argv[2])})
print(json.dumps(s))' "$s" "$run")"
      log "queries run $run: packets/10 ms before $(jq_get "$s" before_median), during stats+flows $(jq_get "$s" queries_median) (worst $(jq_get "$s" queries_min), $(jq_get "$s" queries_calls) calls), after $(jq_get "$s" after_median); during / before $(jq_get "$s" queries_vs_before)"
    else
      CONFIG_HOOK=""
      FAILED=1
    fi
  done
fi

# ------------------------------------------------------------------ report
report_args=("$OUT")
[ "$PLOT" = 1 ] || export PRIVLINK_BENCH_NO_PLOT=1
python3 "$HERE/harness.py" report "${report_args[@]}" | tee -a "$BLOG"
[ "$PROBES" -gt 0 ] && python3 "$HERE/probes.py" report "$OUT" | tee -a "$BLOG"
[ "$SYNC" = 1 ] && python3 "$HERE/sync.py" report "$OUT" | tee -a "$BLOG"

if [ "$FAILED" != 0 ]; then
  log "privlinkd failed in at least one run (see above and $OUT/run/*/privlinkd.log)"
  exit 1
fi
if [ -n "$FLOWS" ] && ! grep -q '"mode": "privlink".*"mpps": [0-9]' "$RAW/forward.jsonl" 2>/dev/null; then
  log "no privlinkd forwarding figure was measured"
  exit 1
fi
log "done: $OUT/results.md, $OUT/results.json"
exit 0
