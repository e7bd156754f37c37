# shellcheck shell=bash disable=SC2034 # OVS_JSON, OVS_NOTE and OVS_TMPDIRS are read by bench.sh
# The Open vSwitch peer of scripts/bench.sh (--peers), sourced by it: Debian's
# ovs-vswitchd-dpdk as a private instance on the same two virtual devices and captures as
# privlinkd and testpmd, forwarding through a conntrack DNAT + SNAT pipeline like ours
# (scripts/bench/ovs_flows.py writes it from the bench's privlinkd configuration).
#
# Private means: its own ovsdb-server and database, sockets, pid files and unixctl sockets
# in a fresh temporary directory (OVS_RUNDIR, OVS_DBDIR, OVS_SYSCONFDIR), its logs in the
# run's directory (OVS_LOGDIR), its own DPDK --file-prefix, and its own network namespace
# (`unshare --net`), so the tap devices a netdev bridge creates for its local port never
# appear on the machine. The system's openvswitch-switch service, if any, is not used or
# touched, and neither is the ovs-vswitchd alternative: the DPDK binary is run by path.
#
# Uses from bench.sh: log, stop_pid, next_prefix, PIDS, HERE, PCAP_MAC, huge_free_mb,
# mb_for_mbufs, mb_nohuge_for_mbufs.

OVS_SCHEMA=${OVS_SCHEMA:-/usr/share/openvswitch/vswitch.ovsschema}
OVS_TMPDIRS=()
OVS_UNSHARE=()

# ovs_find: sets OVS_VSWITCHD (the DPDK build, from the ovs-vswitchd alternatives) or
# returns 1.
ovs_find() {
  if [ -z "${OVS_VSWITCHD:-}" ]; then
    OVS_VSWITCHD=$(update-alternatives --list ovs-vswitchd 2>/dev/null | grep -m1 dpdk)
    [ -n "$OVS_VSWITCHD" ] || OVS_VSWITCHD=/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk
  fi
  [ -x "$OVS_VSWITCHD" ] || return 1
  local t
  for t in ovsdb-tool ovsdb-server ovs-vsctl ovs-ofctl ovs-appctl; do
    command -v "$t" >/dev/null || return 1
  done
  [ -f "$OVS_SCHEMA" ] || return 1
  if unshare --net true 2>/dev/null; then
    OVS_UNSHARE=(unshare --net)
  else
    log "unshare --net does not work here: ovs-vswitchd runs in this network namespace (its bridge's tap is removed on exit)"
    OVS_UNSHARE=()
  fi
  return 0
}

# OVS-DPDK sizes its one shared mempool (MTU 1500) at MAX_NB_MBUF = 262,144 mbufs and, when
# that fails with ENOMEM, halves it down to 16,384 (lib/netdev-dpdk.c). net_pcap's
# infinite_rx keeps the whole capture in mbufs of that pool, so a capture must fit in it.
OVS_MAX_MBUFS=262144
# ovs_pool_for PACKETS -> the pool OVS must end up with for a capture of PACKETS (the
# smallest of its halvings that holds it with testpmd's margin), or nothing when none does.
ovs_pool_for() {
  local need=$(($1 + 16384)) n=$OVS_MAX_MBUFS
  [ "$need" -le "$n" ] || return 0
  while [ $((n / 2)) -ge "$need" ] && [ $((n / 2)) -ge 16384 ]; do n=$((n / 2)); done
  echo "$n"
}

# ovs_vsctl ARGS...: the private database's ovs-vsctl, every wait bounded.
ovs_vsctl() { OVS_RUNDIR=$OVS_RUN ovs-vsctl --db="unix:$OVS_RUN/db.sock" --timeout=30 "$@"; }

# run_ovs DIR VDEV PACKETS MEMKIND WARMUP MEASURE CONFIG -> JSON in OVS_JSON; OVS_NOTE says
# what differed from the other programs (or why it did not run). Not in a $(…) subshell,
# so the clean-up trap knows its processes.
run_ovs() {
  local dir=$1 vdev=$2 packets=$3 memkind=$4 warm=$5 meas=$6 config=$7
  OVS_JSON='{"ok": false}'
  OVS_MEMORY=""
  OVS_NOTE=""
  local pool
  pool=$(ovs_pool_for "$packets")
  if [ -z "$pool" ]; then
    OVS_NOTE="OVS not run: the capture holds $packets packets and net_pcap keeps them all in mbufs, more than OVS-DPDK's shared mempool holds (at most $OVS_MAX_MBUFS mbufs, MAX_NB_MBUF in lib/netdev-dpdk.c)"
    return 1
  fi
  next_prefix o
  local prefix=$PREFIX
  rm -rf "$dir"
  mkdir -p "$dir"
  # Unix socket paths are limited to 107 bytes: the run directory is short, in /tmp.
  OVS_RUN=$(mktemp -d /tmp/plovs.XXXXXX) || { OVS_NOTE="OVS not run: mktemp failed"; return 1; }
  OVS_TMPDIRS+=("$OVS_RUN")
  local -a env=(env "OVS_RUNDIR=$OVS_RUN" "OVS_DBDIR=$OVS_RUN" "OVS_SYSCONFDIR=$OVS_RUN"
    "OVS_LOGDIR=$dir" "OVS_PKGDATADIR=$(dirname "$OVS_SCHEMA")")
  local db_pid="" sw_pid="" rc=1
  # Memory like the others at this flow count. With hugepages, --socket-limit sizes the
  # pool: OVS halves 262,144 until it fits. Without, the pool cannot be halved (a failed
  # --no-huge allocation is ENOBUFS, not ENOMEM): -m covers all 262,144 mbufs (4 KiB each
  # in 4 KiB pages), and --legacy-mem stops OVS adding --in-memory (which --no-huge refuses).
  local extra="--no-pci --file-prefix=$prefix" mem=()
  local limit_mb
  limit_mb=$(mb_for_mbufs "$pool")
  if [ "$memkind" = hugepages ] && [ "$(huge_free_mb)" -ge $((limit_mb + 256)) ]; then
    mem=("other_config:dpdk-socket-limit=$limit_mb")
  else
    [ "$memkind" = hugepages ] && OVS_NOTE="OVS ran --no-huge: $(huge_free_mb) MB of hugepages free, it needs $limit_mb and 256 to spare"
    memkind=no-huge
    extra+=" --no-huge --legacy-mem -m $(mb_nohuge_for_mbufs "$OVS_MAX_MBUFS")"
  fi
  OVS_MEMORY=$memkind

  while :; do # one pass; break on the first failure, clean up below
    "${env[@]}" ovsdb-tool create "$OVS_RUN/conf.db" "$OVS_SCHEMA" >"$dir/ovsdb-tool.log" 2>&1 \
      || { OVS_NOTE="ovsdb-tool create failed (see $dir/ovsdb-tool.log)"; break; }
    "${env[@]}" ovsdb-server "$OVS_RUN/conf.db" --remote="punix:$OVS_RUN/db.sock" \
      --unixctl="$OVS_RUN/ovsdb-server.ctl" --pidfile="$OVS_RUN/ovsdb-server.pid" \
      --log-file="$dir/ovsdb-server.log" --no-chdir >"$dir/ovsdb-server.out" 2>&1 </dev/null &
    db_pid=$!
    PIDS+=("$db_pid")
    local deadline=$((SECONDS + 20))
    while [ $SECONDS -lt $deadline ] && [ ! -S "$OVS_RUN/db.sock" ] && kill -0 "$db_pid" 2>/dev/null; do
      sleep 0.05
    done
    [ -S "$OVS_RUN/db.sock" ] || { OVS_NOTE="ovsdb-server did not start (see $dir/ovsdb-server.log)"; break; }
    # One PMD thread on core 1 (the core privlinkd's worker and testpmd's forwarding core
    # use); ovs-vswitchd's other threads and its DPDK main lcore stay on core 0, where this
    # script runs (taskset in bench.sh: the lowest CPU of its affinity is OVS's -l).
    ovs_vsctl --no-wait init \
      -- set Open_vSwitch . other_config:dpdk-init=true "other_config:dpdk-extra=$extra" \
      other_config:pmd-cpu-mask=0x2 "${mem[@]}" \
      -- add-br br-bench -- set Bridge br-bench datapath_type=netdev fail_mode=secure \
      >"$dir/ovs-vsctl.log" 2>&1 || { OVS_NOTE="ovs-vsctl init failed (see $dir/ovs-vsctl.log)"; break; }
    "${env[@]}" "${OVS_UNSHARE[@]}" "$OVS_VSWITCHD" "unix:$OVS_RUN/db.sock" \
      --unixctl="$OVS_RUN/ovs-vswitchd.ctl" --pidfile="$OVS_RUN/ovs-vswitchd.pid" \
      --log-file="$dir/ovs-vswitchd.log" --no-chdir >"$dir/ovs-vswitchd.out" 2>&1 </dev/null &
    sw_pid=$!
    PIDS+=("$sw_pid")
    deadline=$((SECONDS + 60))
    while [ $SECONDS -lt $deadline ] && kill -0 "$sw_pid" 2>/dev/null; do
      [ -S "$OVS_RUN/br-bench.mgmt" ] && break
      sleep 0.05
    done
    if [ ! -S "$OVS_RUN/br-bench.mgmt" ]; then
      OVS_NOTE="ovs-vswitchd did not start: $(grep -m1 -E 'EMER|ERR' "$dir/ovs-vswitchd.log" | cut -c1-200) (see $dir/ovs-vswitchd.log)"
      break
    fi
    grep -q "DPDK Enabled - initialized" "$dir/ovs-vswitchd.log" \
      || { OVS_NOTE="ovs-vswitchd did not initialise DPDK (see $dir/ovs-vswitchd.log)"; break; }
    # The provider port first: its MAC is the Ethernet source of what the pipeline sends,
    # so the rules can be written before the consumer port starts the replay.
    ovs_vsctl add-port br-bench provider -- set Interface provider type=dpdk \
      options:dpdk-devargs=net_null0,no-rx=1 ofport_request=2 >>"$dir/ovs-vsctl.log" 2>&1 \
      || { OVS_NOTE="the provider port (net_null0) was not added (see $dir/ovs-vswitchd.log)"; break; }
    local pmac
    pmac=$(ovs_vsctl get Interface provider mac_in_use 2>>"$dir/ovs-vsctl.log" | tr -d '"')
    [ -n "$pmac" ] || { OVS_NOTE="no MAC on the provider port"; break; }
    python3 "$HERE/ovs_flows.py" "$config" --consumer-ofport 1 --provider-ofport 2 \
      --consumer-mac "$PCAP_MAC" --provider-mac "$pmac" --out "$dir/flows.txt" >>"$dir/ovs-vsctl.log" 2>&1 \
      || { OVS_NOTE="ovs_flows.py failed (see $dir/ovs-vsctl.log)"; break; }
    ovs-ofctl -O OpenFlow15 replace-flows "unix:$OVS_RUN/br-bench.mgmt" "$dir/flows.txt" >>"$dir/ovs-vsctl.log" 2>&1 \
      || { OVS_NOTE="ovs-ofctl replace-flows failed (see $dir/ovs-vsctl.log)"; break; }
    ovs_vsctl add-port br-bench consumer -- set Interface consumer type=dpdk \
      "options:dpdk-devargs=$vdev" ofport_request=1 >>"$dir/ovs-vsctl.log" 2>&1 \
      || { OVS_NOTE="the consumer port ($vdev) was not added: $(grep -m1 -E 'ERR' "$dir/ovs-vswitchd.log" | cut -c1-200)"; break; }
    local cmac
    cmac=$(ovs_vsctl get Interface consumer mac_in_use 2>/dev/null | tr -d '"')
    if [ "$cmac" != "$PCAP_MAC" ]; then
      OVS_NOTE="the consumer port has MAC $cmac, the captures were made for $PCAP_MAC"
      break
    fi
    OVS_JSON=$(python3 "$HERE/harness.py" ovs-sample "unix:$OVS_RUN/br-bench.mgmt" \
      --rx-port 1 --tx-port 2 --pid "$sw_pid" --warmup "$warm" --measure "$meas")
    # What the pipeline did, for the record (after the measured span: these walk tables on
    # ovs-vswitchd's main thread).
    local A=(ovs-appctl -t "$OVS_RUN/ovs-vswitchd.ctl" --timeout=30)
    {
      echo "== dpctl/ct-stats-show"; "${A[@]}" dpctl/ct-stats-show
      echo "== dpif-netdev/pmd-stats-show"; "${A[@]}" dpif-netdev/pmd-stats-show
      echo "== dpctl/dump-flows"; "${A[@]}" dpctl/dump-flows
      echo "== ovs-ofctl dump-flows"; ovs-ofctl -O OpenFlow15 dump-flows "unix:$OVS_RUN/br-bench.mgmt"
      echo "== netdev-dpdk/get-mempool-info consumer"; "${A[@]}" netdev-dpdk/get-mempool-info consumer | head -12
      echo "== one conntrack entry"; "${A[@]}" dpctl/dump-conntrack | head -4
    } >"$dir/ovs-state.txt" 2>&1
    local conns
    conns=$(sed -n 's/^ *Total: *\([0-9]*\).*/\1/p' "$dir/ovs-state.txt" | head -1)
    OVS_JSON=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["conntrack"]=int(sys.argv[2] or 0); d["pool"]=int(sys.argv[3]); print(json.dumps(d))' \
      "$OVS_JSON" "${conns:-0}" "$pool")
    rc=0
    break
  done

  # Stop: ovs-vswitchd first (SIGTERM: it exits cleanly, DPDK ports closed), then the
  # database; every wait bounded, every pid its own. Outside a namespace of its own, it is
  # told to remove its datapath first, taking the bridge's taps with it.
  if [ -n "$sw_pid" ]; then
    if [ "${#OVS_UNSHARE[@]}" = 0 ] && kill -0 "$sw_pid" 2>/dev/null; then
      ovs-appctl -t "$OVS_RUN/ovs-vswitchd.ctl" --timeout=10 exit --cleanup >/dev/null 2>&1
    fi
    stop_pid "$sw_pid" 15
    [ "$STOP_RC" = 0 ] || [ "$STOP_RC" = 143 ] || log "ovs-vswitchd exited with status $STOP_RC (see $dir/ovs-vswitchd.log)"
  fi
  [ -n "$db_pid" ] && stop_pid "$db_pid" 10
  rm -rf "/var/run/dpdk/$prefix" "$OVS_RUN"
  return $rc
}
