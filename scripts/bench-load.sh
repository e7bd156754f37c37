#!/usr/bin/env bash
# Load test with dpdk-testpmd as the traffic source (one command, bounded in time, root):
#
#   testpmd txonly ══ port ══► privlinkd port 0 ─ NAT ─ port 1 ══ port ══► testpmd rxonly
#   (generator)                (consumer VPC)        (provider VPC)         (sink)
#
# Three DPDK processes, each with its own --file-prefix. By default the two links are
# net_memif pairs (privlinkd is the memif server of both, sockets in a private temp dir),
# so it runs anywhere; on real NICs change only the port arguments (below). The generator
# sends UDP frames to the endpoint 10.1.0.100:9000 from testpmd's multi-flow sources
# 10.1.X.(100 + lcore), X = 0..255 (256 flows per generator forwarding lcore; DPDK 22.11
# varies the third octet of the *destination* address to make the source); privlinkd
# balances them over 16 targets 10.2.0.11-26 behind 16 SNAT addresses (static neighbours,
# scripts/bench/privlink-load.toml) and the sink counts what comes out.
# Prints offered pps (generator TX), privlinkd rx/tx pps (its stats file), delivered pps
# (sink RX), loss (offered vs delivered) and privlinkd's drops by reason, fitted (least
# squares) over the steady window after the warm-up; writes OUT/results.{md,json} and the
# logs of the three processes.
#
#   scripts/bench-load.sh [--duration S] [--warmup S] [--pkt-size B] [--single-flow]
#       [--gen-lcores L] [--appliance-lcores L] [--sink-lcores L]
#       [--gen-ports ARGS] [--appliance-ports ARGS] [--appliance-port-names "P0 P1"]
#       [--sink-ports ARGS] [--mem auto|hugepages|no-huge] [--memif-rsize N]
#       [--mbufs N] [--out DIR] [--smoke]
#
#   --duration S      generator run time, warm-up included (default 20; --smoke: 5)
#   --warmup S        seconds after the first transmitted packet left out of the fit
#                     (default 5; --smoke: 1)
#   --pkt-size B      frame size without FCS, 60-1514 (default 64)
#   --single-flow     no --txonly-multi-flow: one flow 10.1.1.1:40000 -> 10.1.0.100:9000
#   --gen-lcores L, --appliance-lcores L, --sink-lcores L
#                     EAL lcore list of each process; the first is its main lcore, the
#                     others forward (testpmd --nb-cores) or are privlinkd's workers.
#                     Defaults (for 2 CPUs): generator 1,0, privlinkd 0,1, sink 1,0:
#                     privlinkd's worker has CPU 1 to itself, the two testpmd
#                     forwarders share CPU 0, so the sink, descheduled half the time,
#                     drops most of what privlinkd forwards (privlinkd counts it as
#                     tx_full): on 2 CPUs read privlinkd rx, not the loss. (With the
#                     generator on privlinkd's CPU instead, nothing is lost but every
#                     rate is one memif ring per scheduler time slice.) On a big
#                     machine give each process its own cores, e.g. --gen-lcores 2,3
#                     --appliance-lcores 4,5 --sink-lcores 6,7. A generator
#                     forwarding lcore must be < 155 (multi-flow sources 10.1.X.(100 +
#                     lcore) stay in 10.1.0.0/16); with memif, privlinkd's workers get
#                     packets only on the queues the generator's lcores fill (no RSS).
#   --gen-ports ARGS, --appliance-ports ARGS, --sink-ports ARGS
#                     EAL device arguments of each process (split on spaces; @SOCKDIR@
#                     is replaced by the private socket directory). Defaults:
#                       gen:       --no-pci --vdev=net_memif0,role=client,id=0,
#                                  socket=@SOCKDIR@/consumer.sock,socket-abstract=no,
#                                  rsize=N,mac=02:00:00:00:00:01
#                       appliance: --no-pci --vdev=net_memif0,role=server,id=0,
#                                  socket=@SOCKDIR@/consumer.sock,socket-abstract=no,
#                                  rsize=N,mac=02:00:00:00:01:00
#                                  --vdev=net_memif1,role=server,id=0,
#                                  socket=@SOCKDIR@/provider.sock,socket-abstract=no,
#                                  rsize=N,mac=02:00:00:00:01:01
#                       sink:      --no-pci --vdev=net_memif0,role=client,id=0,
#                                  socket=@SOCKDIR@/provider.sock,socket-abstract=no,
#                                  rsize=N,mac=02:00:00:00:02:00
#                     (memif picks a random MAC without mac=.)
#                     Real NICs (generator NIC cabled to privlinkd's first, privlinkd's
#                     second to the sink's; ports bound to vfio-pci):
#                       --gen-ports "-a 0000:03:00.0"
#                       --appliance-ports "-a 0000:04:00.0 -a 0000:04:00.1"
#                       --sink-ports "-a 0000:05:00.0"
#                     privlinkd's ports are named from its arguments in order (-a/--allow
#                     address or --vdev name; the first is the consumer side), or by
#                     --appliance-port-names. The generator sends on its testpmd port 0;
#                     its destination MAC is always read from privlinkd's log (the
#                     consumer port's), so no MAC needs setting. The sink must accept
#                     any destination MAC (testpmd ports are promiscuous). Real NICs
#                     need hugepages (see --mem).
#   --mem MODE        auto (default): 2 MB hugepages with --huge-unlink when at least
#                     256 MB are free, else --no-huge (-m 256 per testpmd, 512 privlinkd)
#   --memif-rsize N   log2 of the default memif rings (default 12 = 4096 slots)
#   --mbufs N         testpmd mbuf pool size (default 16384)
#   --out DIR         results and logs (default bench-out/load)
#   --smoke           ~10 s: 5 s of traffic; exits 0 only if the sink received packets
#                     and privlinkd stopped cleanly
#
# Environment: PRIVLINKD (default target/release/privlinkd; never built here), TESTPMD
# (default dpdk-testpmd). Exit status: 0 measured, 1 a process failed to start, nothing
# was delivered or privlinkd did not stop cleanly, 2 usage. Every wait is bounded. The
# testpmds take commands on a FIFO: the generator and the sink "stop" forwarding, then
# privlinkd gets SIGTERM, then both "quit" (a memif peer closing under a polling lcore
# can crash that lcore's process). Any process still there is stopped by pid (SIGTERM,
# then SIGKILL), and /var/run/dpdk/<prefix>, hugepage files and the memif sockets are
# removed on every exit path, Ctrl-C included.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TEMPLATE=$ROOT/scripts/bench/privlink-load.toml
TESTPMD=${TESTPMD:-dpdk-testpmd}
PRIVLINKD=${PRIVLINKD:-$ROOT/target/release/privlinkd}

DURATION=""
WARMUP=""
PKT_SIZE=64
MULTI_FLOW=1
GEN_LCORES=1,0
APP_LCORES=0,1
SINK_LCORES=1,0
GEN_PORTS=""
APP_PORTS=""
APP_PORT_NAMES=""
SINK_PORTS=""
MEM=auto
RSIZE=12
MBUFS=16384
OUT=$ROOT/bench-out/load
SMOKE=0

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit "${1:-0}"; }
need_arg() { [ $# -ge 2 ] || { echo "bench-load: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) need_arg "$@"; DURATION=$2; shift ;;
    --warmup) need_arg "$@"; WARMUP=$2; shift ;;
    --pkt-size) need_arg "$@"; PKT_SIZE=$2; shift ;;
    --single-flow) MULTI_FLOW=0 ;;
    --gen-lcores) need_arg "$@"; GEN_LCORES=$2; shift ;;
    --appliance-lcores) need_arg "$@"; APP_LCORES=$2; shift ;;
    --sink-lcores) need_arg "$@"; SINK_LCORES=$2; shift ;;
    --gen-ports) need_arg "$@"; GEN_PORTS=$2; shift ;;
    --appliance-ports) need_arg "$@"; APP_PORTS=$2; shift ;;
    --appliance-port-names) need_arg "$@"; APP_PORT_NAMES=$2; shift ;;
    --sink-ports) need_arg "$@"; SINK_PORTS=$2; shift ;;
    --mem) need_arg "$@"; MEM=$2; shift ;;
    --memif-rsize) need_arg "$@"; RSIZE=$2; shift ;;
    --mbufs) need_arg "$@"; MBUFS=$2; shift ;;
    --out) need_arg "$@"; OUT=$2; shift ;;
    --smoke) SMOKE=1 ;;
    -h|--help) usage 0 ;;
    *) echo "bench-load: unknown argument $1 (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done
if [ "$SMOKE" = 1 ]; then
  DURATION=${DURATION:-5}
  WARMUP=${WARMUP:-1}
else
  DURATION=${DURATION:-20}
  WARMUP=${WARMUP:-5}
fi
is_uint() { case "$1" in ''|*[!0-9]*) return 1 ;; esac; }
bad() { echo "bench-load: $*" >&2; exit 2; }
if ! { is_uint "$DURATION" && [ "$DURATION" -ge 2 ] && [ "$DURATION" -le 3600 ]; }; then bad "--duration S: 2..3600"; fi
if ! { is_uint "$WARMUP" && [ "$WARMUP" -le $((DURATION - 2)) ]; }; then bad "--warmup S: at most --duration - 2"; fi
if ! { is_uint "$PKT_SIZE" && [ "$PKT_SIZE" -ge 60 ] && [ "$PKT_SIZE" -le 1514 ]; }; then bad "--pkt-size B: 60..1514"; fi
if ! { is_uint "$RSIZE" && [ "$RSIZE" -ge 1 ] && [ "$RSIZE" -le 14 ]; }; then bad "--memif-rsize N: 1..14"; fi
if ! { is_uint "$MBUFS" && [ "$MBUFS" -ge 2048 ]; }; then bad "--mbufs N: at least 2048"; fi
case "$MEM" in auto|hugepages|no-huge) ;; *) bad "--mem auto|hugepages|no-huge" ;; esac
for l in "$GEN_LCORES" "$APP_LCORES" "$SINK_LCORES"; do
  case "$l" in *[!0-9,]*|'') bad "lcore lists are comma-separated lcore ids, first = main lcore (got '$l')" ;; esac
  [ "$(tr ',' '\n' <<<"$l" | grep -c .)" -ge 2 ] || bad "an lcore list needs a main lcore and at least one more (got '$l')"
done

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
case "$PRIVLINKD" in /*) ;; */*) PRIVLINKD=$PWD/$PRIVLINKD ;; esac
LOG=$OUT/load.log
rm -f "$OUT"/{gen,sink,privlinkd}.log "$OUT"/{samples.jsonl,stats.json,privlink.toml,results.md,results.json,meta.json,check.log}
: >"$LOG"
log() { echo "[bench-load $(date +%T)] $*" | tee -a "$LOG" >&2; }
die() { log "FAILED: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "DPDK needs root"
command -v python3 >/dev/null || die "python3 is missing"
command -v "$TESTPMD" >/dev/null || die "$TESTPMD not found (Debian: apt-get install dpdk-dev)"
[ -x "$PRIVLINKD" ] || die "no privlinkd at $PRIVLINKD (build it with cargo build --release, or set PRIVLINKD)"
[ -f "$TEMPLATE" ] || die "missing $TEMPLATE"

# ------------------------------------------------------------------ clean-up, always
PIDS=()
PREFIXES=("plload$$g" "plload$$a" "plload$$s")
GEN_PREFIX=${PREFIXES[0]} APP_PREFIX=${PREFIXES[1]} SINK_PREFIX=${PREFIXES[2]}
SOCKDIR=$(mktemp -d /tmp/privlink-load.XXXXXX) || die "mktemp failed"
# shellcheck disable=SC2317 # (called by the EXIT trap)
cleanup() {
  local p i
  for p in "${PIDS[@]}"; do
    if kill -0 "$p" 2>/dev/null; then
      kill -TERM "$p" 2>/dev/null
      for ((i = 0; i < 50; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null
      wait "$p" 2>/dev/null
    fi
  done
  for p in "${PREFIXES[@]}"; do
    rm -rf "/var/run/dpdk/$p"
    rm -f /dev/hugepages/"$p"map_* 2>/dev/null
  done
  rm -rf "$SOCKDIR"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM HUP

# shellcheck source=scripts/bench/lib.sh
. "$ROOT/scripts/bench/lib.sh" # stop_pid

# ------------------------------------------------------------------ helpers (python)
PY=$(cat <<'PYEOF'
import json, os, re, socket, sys, time
sys.path.insert(0, os.environ["PLK_BENCH_PY"])
from harness import fit  # least squares, shared with scripts/bench.sh

def tel_open(prefix):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(1.0)
    s.connect("/var/run/dpdk/%s/dpdk_telemetry.v2" % prefix)
    hello = json.loads(s.recv(65536).decode())
    return s, int(hello.get("max_output_len", 16384))

def tel(conn, cmd):
    s, n = conn
    s.send(cmd.encode())
    return json.loads(s.recv(max(n, 65536)).decode()).get(cmd.split(",")[0])

class Proc:
    """One DPDK process seen through its telemetry socket (reconnects as needed)."""
    def __init__(self, prefix):
        self.prefix, self.conn, self.ports = prefix, None, None
    def _connect(self):
        if self.conn is None:
            self.conn = tel_open(self.prefix)
            self.ports = {}
            for pid in tel(self.conn, "/ethdev/list") or []:
                info = tel(self.conn, "/ethdev/info,%d" % pid) or {}
                self.ports[pid] = info.get("name", str(pid))
    def call(self, f):
        try:
            self._connect()
            return f()
        except (OSError, ValueError, AttributeError):
            if self.conn:
                try: self.conn[0].close()
                except OSError: pass
            self.conn = None
            return None
    def stats(self):
        def f():
            out = {}
            for pid, name in self.ports.items():
                st = tel(self.conn, "/ethdev/stats,%d" % pid)
                if st:
                    out[name] = {k: st.get(k, 0) for k in
                                 ("ipackets", "opackets", "imissed", "ierrors", "oerrors", "rx_nombuf")}
            return out
        return self.call(f)
    def links_up(self):
        def f():
            if not self.ports:
                return False
            return all((tel(self.conn, "/ethdev/link_status,%d" % p) or {}).get("status") == "UP"
                       for p in self.ports)
        return bool(self.call(f))

def cmd_fill(a):
    # template out KEY=VALUE...; values are used as they are (the caller escapes).
    text = open(a[0]).read()
    for kv in a[2:]:
        k, v = kv.split("=", 1)
        text = text.replace("@" + k + "@", v)
    open(a[1], "w").write(text)

def cmd_meta(a):
    # file key=value...: merged into the JSON object (numbers stay numbers)
    try:
        m = json.load(open(a[0]))
    except (OSError, ValueError):
        m = {}
    for kv in a[1:]:
        k, v = kv.split("=", 1)
        try:
            m[k] = float(v) if re.fullmatch(r"-?[0-9]+\.[0-9]*", v) else int(v) if re.fullmatch(r"-?[0-9]+", v) else v
        except ValueError:
            m[k] = v
    json.dump(m, open(a[0], "w"), indent=1)

def cmd_toml_list(a):
    print(", ".join(json.dumps(x) for x in a))

def cmd_toml_str(a):
    print(json.dumps(a[0])[1:-1])

def cmd_wait_up(a):
    # prefix pid timeout: 0 when every port of the process is up, 1 if it died, 2 on timeout
    prefix, pid, limit = a[0], int(a[1]), float(a[2])
    p = Proc(prefix)
    end = time.time() + limit
    while time.time() < end:
        try:
            os.kill(pid, 0)
        except OSError:
            sys.exit(1)
        if p.links_up():
            sys.exit(0)
        time.sleep(0.1)
    sys.exit(2)

def pl_stats(path):
    try:
        st = os.stat(path)
        with open(path) as f:
            return st.st_mtime_ns / 1e9, json.load(f)["total"]
    except (OSError, ValueError, KeyError):
        return None

def cmd_sample(a):
    # out gen_prefix app_prefix sink_prefix stats_file stop_file limit_s
    out, stop, limit = a[0], a[5], float(a[6])
    procs = {"gen": Proc(a[1]), "app": Proc(a[2]), "sink": Proc(a[3])}
    end = time.time() + limit
    last_mtime = 0
    with open(out, "a") as f:
        while time.time() < end:
            rec = {}
            for k, p in procs.items():
                t0 = time.time()
                s = p.stats()
                t1 = time.time()
                if s is not None:
                    rec[k] = {"t": (t0 + t1) / 2, "ports": s}
            s = pl_stats(a[4])
            if s and s[0] != last_mtime:
                last_mtime = s[0]
                rec["pl"] = {"t": s[0], "total": s[1]}
            rec["now"] = time.time()
            f.write(json.dumps(rec) + "\n")
            f.flush()
            if os.path.exists(stop):
                break
            time.sleep(0.2)

def fmt_int(x):
    return "-" if x is None else "{:,.0f}".format(x)

def cmd_report(a):
    # samples meta.json gen.log privlinkd.log out_dir
    samples = [json.loads(l) for l in open(a[0]) if l.strip()]
    meta = json.load(open(a[1]))
    genlog = open(a[2], errors="replace").read() if os.path.exists(a[2]) else ""
    pllog = open(a[3], errors="replace").read() if os.path.exists(a[3]) else ""
    outdir = a[4]
    t_stop = meta["t_gen_stop"]
    def series(key, field, pick=None):
        pts = []
        for r in samples:
            if key in r:
                ports = r[key]["ports"]
                names = [pick] if pick else list(ports)
                if pick and pick not in ports:
                    continue
                pts.append((r[key]["t"], sum(ports[n][field] for n in names)))
        return pts
    gen = series("gen", "opackets")
    sink = series("sink", "ipackets")
    pl = [(r["pl"]["t"], r["pl"]["total"]) for r in samples if "pl" in r]
    started = [t for t, v in gen if v > 0]
    res = {"meta": meta, "ok": False, "errors": []}
    if not started:
        res["errors"].append("the generator never transmitted (its port stayed down or refused every packet)")
        t_start = None
    else:
        t_start = started[0]
    w0 = (t_start or 0) + meta["warmup"]
    w1 = t_stop
    inside = lambda pts: [(t, v) for t, v in pts if w0 <= t <= w1]
    offered = fit(inside(gen))
    delivered = fit(inside(sink))
    plw = [(t, s) for t, s in pl if w0 <= t <= w1]
    pl_rx = fit([(t, s["rx_packets"]) for t, s in plw])
    pl_tx = fit([(t, s["tx_packets"]) for t, s in plw])
    drops_w = {}
    if len(plw) >= 2:
        d0, d1 = plw[0][1].get("drops", {}), plw[-1][1].get("drops", {})
        drops_w = {k: d1[k] - d0.get(k, 0) for k in d1 if d1[k] - d0.get(k, 0)}
    # privlinkd's own ports (telemetry): missed = NIC drops before privlinkd saw them
    app_ports = {}
    appw = [(r["app"]["t"], r["app"]["ports"]) for r in samples if "app" in r and w0 <= r["app"]["t"] <= w1]
    if len(appw) >= 2:
        for name in appw[-1][1]:
            if name in appw[0][1]:
                app_ports[name] = {k: appw[-1][1][name][k] - appw[0][1][name][k]
                                   for k in ("ipackets", "opackets", "imissed", "ierrors", "oerrors", "rx_nombuf")}
    # totals over the whole run
    final = None
    m = re.findall(r"^totals (\{.*\})\s*$", pllog, re.M)
    if m:
        try:
            final = json.loads(m[-1])["total"]
        except ValueError:
            final = None
    if final is None and pl:
        final = pl[-1][1]
    gen_fwd = re.search(r"Accumulated forward statistics.*?TX-packets:\s*(\d+)\s+TX-dropped:\s*(\d+)", genlog, re.S)
    gen_sent = int(gen_fwd.group(1)) if gen_fwd else (gen[-1][1] if gen else 0)
    gen_refused = int(gen_fwd.group(2)) if gen_fwd else None
    sink_total = sink[-1][1] if sink else 0
    seconds = (w1 - w0)
    res.update({
        "window": {"start_after_first_tx_s": meta["warmup"], "seconds": round(seconds, 3),
                   "gen_samples": len(inside(gen)), "sink_samples": len(inside(sink)),
                   "privlinkd_samples": len(plw)},
        "offered_pps": offered, "privlinkd_rx_pps": pl_rx, "privlinkd_tx_pps": pl_tx,
        "delivered_pps": delivered,
        "loss_pct": (100.0 * (offered - delivered) / offered) if offered and delivered is not None else None,
        "privlinkd_drops_window": drops_w,
        "privlinkd_ports_window": app_ports,
        "totals": {
            "generator_sent": gen_sent,
            "generator_refused_by_port": gen_refused,
            "privlinkd_rx": final.get("rx_packets") if final else None,
            "privlinkd_tx": final.get("tx_packets") if final else None,
            "privlinkd_new_flows": final.get("new_flows") if final else None,
            "privlinkd_drops": {k: v for k, v in (final or {}).get("drops", {}).items() if v},
            "delivered": sink_total,
            "lost": gen_sent - sink_total if gen_sent else None,
        },
    })
    if seconds < 1 or offered is None:
        res["errors"].append("steady window too short or without generator readings (%.1f s)" % seconds)
    if not sink_total:
        nfu = (final or {}).get("drops", {}).get("not_for_us", 0)
        hint = " (privlinkd dropped %s frames as not_for_us: wrong destination MAC)" % fmt_int(nfu) if nfu else ""
        res["errors"].append("the sink received nothing" + hint)
    res["ok"] = not res["errors"]
    json.dump(res, open(os.path.join(outdir, "results.json"), "w"), indent=1)

    def pct(x):
        return "-" if x is None else "%.2f %%" % x
    rows = [
        ("offered (generator TX)", fmt_int(offered)),
        ("privlinkd rx", fmt_int(pl_rx)),
        ("privlinkd tx", fmt_int(pl_tx)),
        ("delivered (sink RX)", fmt_int(delivered)),
        ("loss, offered vs delivered", pct(res["loss_pct"])),
    ]
    flows = meta["flows"]
    head = ("%d-byte frames, %s, %s s of traffic, fitted over %.1f s after a %s s warm-up"
            % (meta["pkt_size"], "%d flows (testpmd multi-flow)" % flows if meta["multi_flow"] else "1 flow",
               meta["duration"], seconds, meta["warmup"]))
    tbl = ["| measure | pps |", "|---|---:|"] + ["| %s | %s |" % r for r in rows]
    dl = ", ".join("%s %s" % (k, fmt_int(v)) for k, v in sorted(drops_w.items())) or "none"
    tot = res["totals"]
    extra = [
        "privlinkd drops in the window: " + dl,
        "whole run: generator sent %s%s, privlinkd rx %s / tx %s (%s new flows), sink received %s, lost %s"
        % (fmt_int(tot["generator_sent"]),
           "" if gen_refused is None else " (%s more refused by its full TX ring: backpressure)" % fmt_int(gen_refused),
           fmt_int(tot["privlinkd_rx"]), fmt_int(tot["privlinkd_tx"]), fmt_int(tot["privlinkd_new_flows"]),
           fmt_int(tot["delivered"]), fmt_int(tot["lost"])),
        "whole-run privlinkd drops: " + (", ".join("%s %s" % (k, fmt_int(v)) for k, v in sorted(tot["privlinkd_drops"].items())) or "none"),
    ]
    why = {"tx_full": "privlinkd's TX queue towards the next hop was full (the sink did not keep up)",
           "not_for_us": "destination MAC is not privlinkd's port (the generator's --eth-peer)",
           "unknown_destination": "no endpoint/SNAT address matches (the generator's destination IP)",
           "no_listener": "the endpoint does not listen on that protocol/port",
           "neighbour_unresolved": "no MAC for the next hop (static_neighbours)",
           "flow_table_full": "[tables] flows_per_worker too small",
           "snat_exhausted": "no free SNAT port"}
    for k in sorted(set(drops_w) | set(tot["privlinkd_drops"])):
        if k in why:
            extra.append("(%s: %s)" % (k, why[k]))
    for name, d in sorted(app_ports.items()):
        if d["imissed"] or d["ierrors"] or d["oerrors"] or d["rx_nombuf"]:
            extra.append("privlinkd port %s in the window: missed %s, rx errors %s, tx errors %s, rx no-mbuf %s"
                         % (name, fmt_int(d["imissed"]), fmt_int(d["ierrors"]), fmt_int(d["oerrors"]), fmt_int(d["rx_nombuf"])))
    for e in res["errors"]:
        extra.append("ERROR: " + e)
    text = "\n".join([head, ""] + tbl + [""] + extra)
    print(text)
    md = ["# privlinkd load test (testpmd txonly → privlinkd → testpmd rxonly)", "",
          "%s; %s; CPU %s (%s CPUs); DPDK %s; %s." % (meta["date"], meta["memory"], meta["cpu"], meta["cpus"], meta["dpdk"], meta["privlinkd"]),
          "", head, ""] + tbl + [""] + ["- " + e for e in extra] + ["",
          "| process | lcores | ports |", "|---|---|---|",
          "| generator (testpmd txonly) | %s | `%s` |" % (meta["gen_lcores"], meta["gen_ports"]),
          "| privlinkd | %s | `%s` |" % (meta["appliance_lcores"], meta["appliance_ports"]),
          "| sink (testpmd rxonly) | %s | `%s` |" % (meta["sink_lcores"], meta["sink_ports"]), "",
          "Rates are least-squares slopes of the counters against time over the window: generator",
          "port TX and sink port RX from the testpmds' telemetry sockets (every 0.2 s),",
          "privlinkd rx/tx from its stats file (every rewrite). Logs: gen.log, privlinkd.log,",
          "sink.log, samples.jsonl in this directory.", ""]
    open(os.path.join(outdir, "results.md"), "w").write("\n".join(md))
    sys.exit(0 if res["ok"] else 1)

{"fill": cmd_fill, "meta": cmd_meta, "toml-list": cmd_toml_list, "toml-str": cmd_toml_str, "wait-up": cmd_wait_up,
 "sample": cmd_sample, "report": cmd_report}[sys.argv[1]](sys.argv[2:])
PYEOF
)
py() { PLK_BENCH_PY="$ROOT/scripts/bench" python3 -c "$PY" "$@"; }

# ------------------------------------------------------------------ ports
MEMIF="socket-abstract=no,rsize=$RSIZE"
[ -n "$GEN_PORTS" ] || GEN_PORTS="--no-pci --vdev=net_memif0,role=client,id=0,socket=@SOCKDIR@/consumer.sock,$MEMIF,mac=02:00:00:00:00:01"
[ -n "$APP_PORTS" ] || APP_PORTS="--no-pci --vdev=net_memif0,role=server,id=0,socket=@SOCKDIR@/consumer.sock,$MEMIF,mac=02:00:00:00:01:00 --vdev=net_memif1,role=server,id=0,socket=@SOCKDIR@/provider.sock,$MEMIF,mac=02:00:00:00:01:01"
[ -n "$SINK_PORTS" ] || SINK_PORTS="--no-pci --vdev=net_memif0,role=client,id=0,socket=@SOCKDIR@/provider.sock,$MEMIF,mac=02:00:00:00:02:00"
split_ports() { # string -> PORT_ARGS array, @SOCKDIR@ replaced
  local a
  PORT_ARGS=()
  read -r -a a <<<"$1"
  for x in "${a[@]}"; do PORT_ARGS+=("${x//@SOCKDIR@/$SOCKDIR}"); done
}
split_ports "$GEN_PORTS"; GEN_ARGS=("${PORT_ARGS[@]}")
split_ports "$APP_PORTS"; APP_ARGS=("${PORT_ARGS[@]}")
split_ports "$SINK_PORTS"; SINK_ARGS=("${PORT_ARGS[@]}")

# privlinkd's port names, in order, from its device arguments
if [ -n "$APP_PORT_NAMES" ]; then
  read -r -a NAMES <<<"$APP_PORT_NAMES"
else
  NAMES=()
  next=""
  for x in "${APP_ARGS[@]}"; do
    if [ -n "$next" ]; then NAMES+=("${x%%,*}"); next=""; continue; fi
    case "$x" in
      -a|--allow|--vdev) next=1 ;;
      --allow=*|--vdev=*) v=${x#*=}; NAMES+=("${v%%,*}") ;;
      -a?*) v=${x#-a}; NAMES+=("${v%%,*}") ;;
    esac
  done
fi
[ "${#NAMES[@]}" = 2 ] || die "privlinkd needs exactly two ports (consumer, provider); its arguments name ${#NAMES[@]} (${NAMES[*]:-none}): use --appliance-port-names \"P0 P1\""
PORT0=${NAMES[0]} PORT1=${NAMES[1]}

first_lcore() { echo "${1%%,*}"; }
n_fwd() { echo $(( $(tr ',' '\n' <<<"$1" | grep -c .) - 1 )); }
GEN_FWD=$(n_fwd "$GEN_LCORES")
SINK_FWD=$(n_fwd "$SINK_LCORES")
WORKERS=${APP_LCORES#*,}
FLOWS=1
[ "$MULTI_FLOW" = 1 ] && FLOWS=$((256 * GEN_FWD))
for l in $(tr ',' ' ' <<<"${GEN_LCORES#*,}"); do
  [ "$MULTI_FLOW" = 0 ] || [ "$l" -lt 155 ] || log "warning: generator lcore $l: its multi-flow sources 10.1.X.(100+$l) leave the consumer VPC 10.1.0.0/16 for some X"
done

# ------------------------------------------------------------------ memory
huge_free_mb() {
  grep -q ' /dev/hugepages hugetlbfs' /proc/mounts || { echo 0; return; }
  awk '/^Hugepagesize:/ {kb = $2} /^HugePages_Free:/ {f = $2} END {printf "%d", f * kb / 1024}' /proc/meminfo
}
if [ "$MEM" = auto ]; then
  if [ "$(huge_free_mb)" -ge 256 ]; then MEM=hugepages; else MEM=no-huge; fi
fi
if [ "$MEM" = hugepages ]; then
  [ "$(huge_free_mb)" -gt 0 ] || die "--mem hugepages: no free 2 MB hugepages (scripts/hugepages.sh reserves them)"
  TP_MEM=(--huge-unlink)
  PL_MEM=(--huge-unlink)
  MEMDESC="hugepages ($(huge_free_mb) MB free at start, --huge-unlink)"
else
  TP_MEM=(--no-huge -m $(( MBUFS * 4096 / 1048576 + 192 )))
  PL_MEM=(--no-huge -m 512)
  MEMDESC="--no-huge"
fi

# ------------------------------------------------------------------ privlinkd configuration
APPDIR=$SOCKDIR/appliance
mkdir -p "$APPDIR/state"
STATS=$OUT/stats.json
CONF=$OUT/privlink.toml
eal=$(py toml-list -l "$APP_LCORES" --main-lcore "$(first_lcore "$APP_LCORES")" "--file-prefix=$APP_PREFIX" \
  "${PL_MEM[@]}" "${APP_ARGS[@]}")
fill() { # $1 = stats interval line
  py fill "$TEMPLATE" "$CONF" "EAL_ARGS=$eal" "WORKER_LCORES=$WORKERS" BURST=32 DESC=1024 \
    "PORT0=$(py toml-str "$PORT0")" "PORT1=$(py toml-str "$PORT1")" "DIR=$(py toml-str "$APPDIR")" \
    "STATS_FILE=$(py toml-str "$STATS")" FLOWS_PER_WORKER=65536 "STATS_INTERVAL=$1"
}
STATS_MS=1000
fill "stats_interval_ms = 250"
if "$PRIVLINKD" --config "$CONF" --check >/dev/null 2>&1; then
  STATS_MS=250
else
  fill ""
  "$PRIVLINKD" --config "$CONF" --check >"$OUT/check.log" 2>&1 \
    || { cat "$OUT/check.log" >&2; die "the load-test configuration does not validate (see $CONF)"; }
fi

meta() { py meta "$OUT/meta.json" "$@"; }
meta date="$(date '+%Y-%m-%d %H:%M %Z')" cpu="$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p')" \
  cpus="$(nproc)" dpdk="$(pkg-config --modversion libdpdk 2>/dev/null || echo '?')" \
  privlinkd="$("$PRIVLINKD" --version 2>&1 | head -1)" memory="$MEMDESC" duration="$DURATION" \
  warmup="$WARMUP" pkt_size="$PKT_SIZE" multi_flow="$MULTI_FLOW" flows="$FLOWS" smoke="$SMOKE" \
  gen_lcores="$GEN_LCORES" appliance_lcores="$APP_LCORES" sink_lcores="$SINK_LCORES" \
  gen_ports="$GEN_PORTS" appliance_ports="$APP_PORTS" sink_ports="$SINK_PORTS" stats_interval_ms="$STATS_MS"

# ------------------------------------------------------------------ privlinkd
log "privlinkd $PRIVLINKD: ports $PORT0 (consumer) + $PORT1 (provider), lcores $APP_LCORES; memory: $MEMDESC"
RUST_LOG=info "$PRIVLINKD" --config "$CONF" >"$OUT/privlinkd.log" 2>&1 </dev/null &
PL_PID=$!
PIDS+=("$PL_PID")
deadline=$((SECONDS + 60))
while [ $SECONDS -lt $deadline ]; do
  grep -q "privlinkd ready" "$OUT/privlinkd.log" && break
  kill -0 "$PL_PID" 2>/dev/null || break
  sleep 0.1
done
show_errors() { # the error lines of a log, else its tail
  { grep -iE "error|invalid|cannot|failed|panicked" "$1" || tail -15 "$1"; } | tail -8 | tee -a "$LOG" >&2
}
if ! grep -q "privlinkd ready" "$OUT/privlinkd.log"; then
  show_errors "$OUT/privlinkd.log"
  kill -0 "$PL_PID" 2>/dev/null || { wait "$PL_PID"; die "privlinkd exited at start with status $? (see $OUT/privlinkd.log)"; }
  die "privlinkd was not ready within 60 s (see $OUT/privlinkd.log)"
fi
# Its consumer port's MAC (a real NIC's, or the memif mac= devarg): the generator's
# destination.
MAC0=$(grep -F "port $PORT0 (" "$OUT/privlinkd.log" | sed -n 's/.*mac \([0-9A-Fa-f:]\{17\}\).*/\1/p' | head -1)
[ -n "$MAC0" ] || die "privlinkd did not log the MAC of $PORT0 (see $OUT/privlinkd.log)"
log "privlinkd ready (pid $PL_PID), $PORT0 mac $MAC0"

# ------------------------------------------------------------------ testpmd
# The testpmds run interactively (-i --auto-start), their commands written to a FIFO: a
# "stop" ends forwarding with every memif link still connected. A memif peer that
# disconnects while the other side polls can crash it (the PMD unmaps the rings under
# the polling lcore: privlinkd died with SIGSEGV once when the generator simply exited),
# so the order is: generator stop, sink stop, privlinkd SIGTERM, then both testpmds quit.
# start_testpmd NAME PREFIX LCORES LOGFILE EAL-DEVICE-ARGS... -- TESTPMD-ARGS...; sets
# TP_PID and TP_FD (the FIFO, open read-write here so that testpmd never sees EOF)
start_testpmd() {
  local name=$1 prefix=$2 lcores=$3 logf=$4 fifo=$SOCKDIR/$1.cmd
  shift 4
  mkfifo "$fifo" || die "mkfifo $fifo failed"
  exec {TP_FD}<>"$fifo"
  # (stdbuf: line-buffered output, so that the log shows each command's answer at once)
  "${STDBUF[@]}" "$TESTPMD" -l "$lcores" --main-lcore "$(first_lcore "$lcores")" "--file-prefix=$prefix" \
    "${TP_MEM[@]}" "$@" >"$logf" 2>&1 <&"$TP_FD" &
  TP_PID=$!
  PIDS+=("$TP_PID")
  py wait-up "$prefix" "$TP_PID" 30
  case $? in
    0) log "$name up (pid $TP_PID, lcores $lcores)" ;;
    1) show_errors "$logf"; die "$name ($TESTPMD) exited at start (see $logf)" ;;
    *) show_errors "$logf"; die "$name: its ports were not up within 30 s (see $logf)" ;;
  esac
}
# tp_stop FD LOGFILE NAME: "stop" (forwarding only), waits up to 10 s for its statistics
tp_stop() {
  local i
  echo stop >&"$1"
  for ((i = 0; i < 100; i++)); do
    grep -q "Accumulated forward statistics" "$2" && return 0
    sleep 0.1
  done
  log "note: the $3 did not confirm \"stop\" within 10 s (see $2)"
  return 1
}
# tp_quit PID FD NAME: "quit", up to 15 s, then SIGTERM/SIGKILL; exit status in STOP_RC
tp_quit() {
  local i
  echo quit >&"$2"
  for ((i = 0; i < 150; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$1" 2>/dev/null && log "the $3 did not quit within 15 s"
  stop_pid "$1" 5
}
STDBUF=()
command -v stdbuf >/dev/null && STDBUF=(stdbuf -oL -eL)
TP_COMMON=(-i --auto-start "--total-num-mbufs=$MBUFS" --no-mlockall)
start_testpmd sink "$SINK_PREFIX" "$SINK_LCORES" "$OUT/sink.log" "${SINK_ARGS[@]}" -- \
  --forward-mode=rxonly "--nb-cores=$SINK_FWD" "--rxq=$SINK_FWD" "--txq=$SINK_FWD" "${TP_COMMON[@]}"
SINK_PID=$TP_PID SINK_FD=$TP_FD

# the sampler: telemetry of the three processes and privlinkd's stats file, every 0.2 s
py sample "$OUT/samples.jsonl" "$GEN_PREFIX" "$APP_PREFIX" "$SINK_PREFIX" "$STATS" "$SOCKDIR/stop" \
  $((DURATION + 90)) 2>>"$LOG" &
SAMPLER_PID=$!
PIDS+=("$SAMPLER_PID")

MF=()
[ "$MULTI_FLOW" = 1 ] && MF=(--txonly-multi-flow)
start_testpmd generator "$GEN_PREFIX" "$GEN_LCORES" "$OUT/gen.log" "${GEN_ARGS[@]}" -- \
  --forward-mode=txonly "${MF[@]}" --tx-ip=10.1.1.1,10.1.0.100 --tx-udp=40000,9000 \
  "--txpkts=$PKT_SIZE" "--eth-peer=0,$MAC0" "--nb-cores=$GEN_FWD" "--txq=$GEN_FWD" "--rxq=$GEN_FWD" \
  "${TP_COMMON[@]}"
GEN_PID=$TP_PID GEN_FD=$TP_FD
log "traffic: $PKT_SIZE-byte frames, $FLOWS flow(s), for $DURATION s (warm-up $WARMUP s)"

end=$((SECONDS + DURATION))
while [ $SECONDS -lt $end ]; do
  for p in "$GEN_PID:generator:gen" "$PL_PID:privlinkd:privlinkd" "$SINK_PID:sink:sink" "$SAMPLER_PID:sampler:load"; do
    kill -0 "${p%%:*}" 2>/dev/null || { q=${p#*:}; die "the ${q%%:*} exited during the run (see $OUT/${p##*:}.log)"; }
  done
  sleep 0.5
done
meta t_gen_stop="$(date +%s.%N)"

# ------------------------------------------------------------------ stop, in traffic order
tp_stop "$GEN_FD" "$OUT/gen.log" generator
sleep 1 # privlinkd and the sink drain their rings
: >"$SOCKDIR/stop"
for ((i = 0; i < 50; i++)); do kill -0 "$SAMPLER_PID" 2>/dev/null || break; sleep 0.1; done
stop_pid "$SAMPLER_PID" 2
tp_stop "$SINK_FD" "$OUT/sink.log" sink
stop_pid "$PL_PID" 20
PL_RC=$STOP_RC
tp_quit "$GEN_PID" "$GEN_FD" generator
GEN_RC=$STOP_RC
tp_quit "$SINK_PID" "$SINK_FD" sink
SINK_RC=$STOP_RC
CLEAN=1
if [ "$PL_RC" != 0 ] || grep -q panicked "$OUT/privlinkd.log" || ! grep -q "^totals {" "$OUT/privlinkd.log"; then
  CLEAN=0
  log "privlinkd did not stop cleanly: exit status $PL_RC$(grep -q panicked "$OUT/privlinkd.log" && echo ', after a panic') (see $OUT/privlinkd.log)"
fi
[ "$GEN_RC" = 0 ] || log "note: the generator exited with status $GEN_RC (see $OUT/gen.log)"
[ "$SINK_RC" = 0 ] || log "note: the sink exited with status $SINK_RC (see $OUT/sink.log)"
meta privlinkd_clean_exit="$CLEAN" privlinkd_exit_status="$PL_RC"

# ------------------------------------------------------------------ report
py report "$OUT/samples.jsonl" "$OUT/meta.json" "$OUT/gen.log" "$OUT/privlinkd.log" "$OUT" | tee -a "$LOG"
REPORT_RC=${PIPESTATUS[0]}
log "results: $OUT/results.md, $OUT/results.json; logs: $OUT/{gen,privlinkd,sink,load}.log"
if [ "$REPORT_RC" != 0 ]; then
  log "FAILED: no valid measurement (see above)"
  exit 1
fi
[ "$CLEAN" = 1 ] || { log "FAILED: privlinkd did not stop cleanly"; exit 1; }
[ "$SMOKE" = 1 ] && log "smoke: ok (the sink received packets, privlinkd stopped cleanly)"
exit 0
