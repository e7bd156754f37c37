#!/usr/bin/env python3
"""Measurement and report helpers of scripts/bench.sh (which starts and stops processes).

  harness.py sample STATS --warmup W --measure M [--deadline S]
      privlinkd's stats file (rewritten every 100 ms in the bench configuration): wait W seconds, then fit
      tx_packets against the file's write time over the next M seconds (least squares over
      every rewrite, which averages out the up-to-100 ms staleness of each worker's
      published counters). Prints one JSON object.
  harness.py setup STATS --expect N [--deadline S] [--stall S]
      the setup-rate run: records every rewrite until new_flows reaches N or stops
      growing; the rate is fitted over the rewrites taken while flows were being created.
  harness.py testpmd LOG --port P [--skip K] [--take M] [--count-only]
      dpdk-testpmd's periodic statistics (--stats-period 1): the Tx-pps of port P, first K
      non-zero readings skipped (warm-up), mean of the next M.
  harness.py testpmd-watch LOG --pid PID [--warmup W] [--measure M] [--once]
      follows a running testpmd and returns once the measured span is covered (see
      cmd_testpmd_watch for how readings are chosen).
  harness.py ovs-sample BRIDGE --tx-port P --rx-port Q --pid PID [--warmup W] [--measure M]
      the Open vSwitch peer (--peers): reads the ports' counters with `ovs-ofctl
      dump-ports BRIDGE` every 100 ms (the rate privlinkd rewrites its stats file), waits
      for the first packet out plus W seconds, then fits tx_packets of port P against the
      reading times over the next M seconds, as `sample` does for privlinkd.
  harness.py report OUT [--also DIR:LABEL]
      OUT/raw/*.jsonl -> OUT/results.json, OUT/results.md, the table on stdout, and
      OUT/mpps.png when matplotlib is installed.
"""

import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import time


def raw_records(out, name):
    """The records of OUT/raw/NAME (one JSON object a line); none when it is absent."""
    path = os.path.join(out, "raw", name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def read_stats(path):
    """(write time in s, parsed JSON) of the stats file, or None while it is absent."""
    try:
        st = os.stat(path)
        with open(path) as f:
            text = f.read()
        return st.st_mtime_ns / 1e9, json.loads(text)
    except (OSError, ValueError):
        return None


def wait_rewrite(path, after_mtime, deadline):
    while time.time() < deadline:
        s = read_stats(path)
        if s is not None and s[0] > after_mtime:
            return s
        time.sleep(0.01)
    return None


def fit(points):
    """Least-squares slope of (t, v) points."""
    n = len(points)
    if n < 2:
        return None
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in points) / den


def drops_of(total):
    return {k: v for k, v in total.get("drops", {}).items() if v}


def cmd_sample(a):
    start = time.time()
    deadline = start + a.warmup + a.measure + a.deadline
    time.sleep(a.warmup)
    first = wait_rewrite(a.stats, 0, deadline)
    if first is None:
        print(json.dumps({"ok": False, "error": "stats file never written"}))
        return
    samples = [first]
    while samples[-1][0] - first[0] < a.measure - 0.02:
        s = wait_rewrite(a.stats, samples[-1][0], deadline)
        if s is None:
            break
        samples.append(s)
    t0, s0 = samples[0]
    t1, s1 = samples[-1]
    tot0, tot1 = s0["total"], s1["total"]
    pts_tx = [(t, s["total"]["tx_packets"]) for t, s in samples]
    pts_rx = [(t, s["total"]["rx_packets"]) for t, s in samples]
    tx_pps = fit(pts_tx)
    rx_pps = fit(pts_rx)
    drops0 = sum(tot0.get("drops", {}).values())
    drops1 = sum(tot1.get("drops", {}).values())
    out = {
        "ok": tx_pps is not None and tx_pps > 0,
        "samples": len(samples),
        "seconds": round(t1 - t0, 3),
        "tx_pps": tx_pps,
        "rx_pps": rx_pps,
        "tx_delta": tot1["tx_packets"] - tot0["tx_packets"],
        "rx_delta": tot1["rx_packets"] - tot0["rx_packets"],
        "drops_delta": drops1 - drops0,
        "new_flows": tot1.get("new_flows", 0),
        "active_flows": tot1.get("active_flows", 0),
        "drops": drops_of(tot1),
        "tx_total": tot1["tx_packets"],
    }
    print(json.dumps(out))


def cmd_setup(a):
    start = time.time()
    deadline = start + a.deadline
    samples = []
    last = 0
    stalled_since = None
    while time.time() < deadline:
        s = wait_rewrite(a.stats, last, min(deadline, time.time() + 3))
        if s is None:
            continue
        last = s[0]
        n = s[1]["total"]["new_flows"]
        samples.append((s[0], n, s[1]["total"]["rx_packets"], s[1]))
        if n >= a.expect:
            # One more rewrite so the last one is clearly past the end.
            break
        if len(samples) >= 2 and n == samples[-2][1] and n > 0:
            stalled_since = stalled_since or s[0]
            if s[0] - stalled_since >= a.stall:
                break
        else:
            stalled_since = None
    final = samples[-1][1] if samples else 0
    # While flows were being created: after the first, before the count reached its
    # final value (all N, or fewer when some SYNs made no flow and the run ended on the
    # stall, whose flat tail must not weigh in the fit).
    inside = [(t, n) for t, n, _, _ in samples if 0 < n < min(a.expect, final)]
    # Rewrites while flows were being created, plus the first one that saw the end
    # (new_flows only stops at the end; its time bounds the run from above).
    rate = fit(inside)
    first_t = inside[0][0] if inside else None
    done_t = next((t for t, n, _, _ in samples if n >= min(a.expect, final) > 0), None)
    out = {
        "ok": rate is not None and rate > 0,
        "expect": a.expect,
        "new_flows": final,
        "samples_inside": len(inside),
        "rate": rate,
        # Bounds from the end of the run: all M flows over the time from the first rewrite
        # that saw any flow to the first that saw all (lower bound of the rate).
        "rate_lower_bound": (final - inside[0][1]) / (done_t - first_t)
        if inside and done_t and done_t > first_t else None,
        "drops": drops_of(samples[-1][3]["total"]) if samples else {},
        "rx_packets": samples[-1][2] if samples else 0,
    }
    if len(inside) < 2:
        out["error"] = ("the replay finished within %d stats rewrite(s); use more SYNs "
                        "(--syn-flows)" % len(inside))
    print(json.dumps(out))


def testpmd_readings(path, port):
    """Tx-pps readings of `port`, in order."""
    try:
        text = open(path, errors="replace").read()
    except OSError:
        return []
    readings = []
    cur = None
    for line in text.splitlines():
        m = re.search(r"NIC statistics for port (\d+)", line)
        if m:
            cur = int(m.group(1))
            continue
        m = re.search(r"Tx-pps:\s+(\d+)", line)
        if m and cur == port:
            readings.append(int(m.group(1)))
    return readings


def pid_alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def cmd_testpmd_watch(a):
    """Follows testpmd's log while it runs. Its statistics come every --stats-period
    *or later* (every 2 s here: its 1 s sleep ends a hair short of the period), and each
    Tx-pps reading averages the time since the previous one; so readings are selected by
    their arrival time: those whose whole interval falls after the first non-zero reading
    plus the warm-up, until the measured span is covered. Returns as soon as it is (or the
    replay of a capture without infinite_rx ends, or at the deadline)."""
    start = time.time()
    arrivals = []  # (time, reading) of the port's readings, as they appear
    first = None
    deadline = start + a.startup
    while time.time() < deadline:
        r = testpmd_readings(a.log, a.port)
        now = time.time()
        for x in r[len(arrivals):]:
            arrivals.append((now, x))
            if first is None and x > 0:
                first = now
                deadline = now + a.warmup + a.measure + 10
        if first is not None:
            # (prev arrival, arrival, reading) with the interval after the warm-up.
            win = [(arrivals[i - 1][0], t, x) for i, (t, x) in enumerate(arrivals)
                   if i > 0 and arrivals[i - 1][0] >= first + a.warmup - 0.05]
            covered = win and win[-1][1] - win[0][0] >= a.measure - 0.05
            ended = arrivals[-1][1] == 0 and now > first + 1
            if covered or ended:
                break
        if not pid_alive(a.pid):
            break
        time.sleep(0.05)
    if a.once:
        # The first and last non-zero readings cover the start and the end of the replay
        # (partly idle): the mean of those between, or the best one when there are none.
        nz = [x for _, x in arrivals if x > 0]
        use = nz[1:-1] if len(nz) >= 3 else nz
        pps = (statistics.mean(use) if len(nz) >= 3 else max(use)) if use else None
    else:
        win = [(t0, t1, x) for i, (t1, x) in enumerate(arrivals)
               for t0 in [arrivals[i - 1][0] if i > 0 else 0]
               if i > 0 and first is not None and t0 >= first + a.warmup - 0.05]
        use = [x for _, _, x in win]
        pps = (sum(x * (t1 - t0) for t0, t1, x in win) / sum(t1 - t0 for t0, t1, _ in win)
               if win else None)
    print(json.dumps({"ok": bool(pps), "readings": use, "tx_pps": pps,
                      "waited": round(time.time() - start, 1)}))


def cmd_testpmd(a):
    r = testpmd_readings(a.log, a.port)
    nz = [x for x in r if x > 0]
    if a.count_only:
        ended = 1 if nz and r and r[-1] == 0 else 0
        print(len(nz), ended)
        return
    use = nz[a.skip:a.skip + a.take] if a.take else nz[a.skip:]
    if a.drop_last and len(use) > 1:
        use = use[:-1]
    out = {
        "ok": bool(use),
        "readings": use,
        "tx_pps": (max(use) if a.max else statistics.mean(use)) if use else None,
    }
    print(json.dumps(out))


def ofctl_ports(bridge):
    """{ofport: (rx_packets, rx_dropped, tx_packets, tx_dropped)} from `ovs-ofctl
    dump-ports`, or None when it fails."""
    try:
        out = subprocess.run(["ovs-ofctl", "dump-ports", bridge], capture_output=True,
                             text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    ports = {}
    for m in re.finditer(r"port\s+(\w+): rx pkts=(\d+), bytes=[^,]*, drop=([^,]*),.*?"
                         r"tx pkts=(\d+), bytes=[^,]*, drop=([^,]*),", out, re.S):
        if m.group(1).isdigit():
            ports[int(m.group(1))] = tuple(int(x) if x.isdigit() else 0
                                           for x in m.group(2, 3, 4, 5))
    return ports or None


def cmd_ovs_sample(a):
    start = time.time()
    deadline = start + a.startup
    first = None
    while time.time() < deadline and pid_alive(a.pid):
        p = ofctl_ports(a.bridge)
        if p and p.get(a.tx_port, (0, 0, 0, 0))[2] > 0:
            first = time.time()
            break
        time.sleep(0.05)
    if first is None:
        print(json.dumps({"ok": False, "error": "no packet left the provider port",
                          "waited": round(time.time() - start, 1)}))
        return
    time.sleep(a.warmup)
    samples = []
    t_end = time.time() + a.measure
    while pid_alive(a.pid):
        t0 = time.time()
        p = ofctl_ports(a.bridge)
        t1 = time.time()
        if p and a.tx_port in p and a.rx_port in p:
            # The reading is taken somewhere between t0 and t1: the midpoint.
            samples.append(((t0 + t1) / 2, p))
        if t1 >= t_end:
            break
        time.sleep(max(0.0, 0.1 - (time.time() - t0)))
    if len(samples) < 2:
        print(json.dumps({"ok": False, "error": "fewer than 2 readings of the ports"}))
        return
    tx_pps = fit([(t, p[a.tx_port][2]) for t, p in samples])
    rx_pps = fit([(t, p[a.rx_port][0]) for t, p in samples])
    (t0, p0), (t1, p1) = samples[0], samples[-1]
    rx_delta = p1[a.rx_port][0] - p0[a.rx_port][0]
    tx_delta = p1[a.tx_port][2] - p0[a.tx_port][2]
    print(json.dumps({
        "ok": tx_pps is not None and tx_pps > 0,
        "samples": len(samples),
        "seconds": round(t1 - t0, 3),
        "tx_pps": tx_pps,
        "rx_pps": rx_pps,
        "rx_delta": rx_delta,
        "tx_delta": tx_delta,
        # Packets read from the replay that did not leave (OVS counts no drop reasons on
        # these ports: a miss, a failed upcall or a ct failure all show here).
        "lost_delta": rx_delta - tx_delta,
        "tx_dropped_delta": p1[a.tx_port][3] - p0[a.tx_port][3],
    }))


# ---------------------------------------------------------------------------- report


def med_range(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def fmt(mr, scale=1.0, digits=2, pct=False, times=False):
    if mr is None:
        return "n/a"
    if pct:
        # One decimal below 10 %, where the peer's ratios are.
        f = lambda x: f"{x * 100:.1f}%" if x < 0.1 else f"{x * 100:.0f}%"  # noqa: E731
    elif times:
        f = lambda x: f"{x:.1f}×"  # noqa: E731
    else:
        f = lambda x: f"{x * scale:.{digits}f}"  # noqa: E731
    if mr["n"] == 1:
        return f(mr["median"])
    return f"{f(mr['median'])} [{f(mr['min'])}–{f(mr['max'])}]"


def cmd_report(a):
    out = a.out
    recs = []
    for p in sorted(glob.glob(os.path.join(out, "raw", "*.jsonl"))):
        with open(p) as f:
            recs += [json.loads(l) for l in f if l.strip()]
    meta = {}
    mp = os.path.join(out, "raw", "meta.json")
    if os.path.exists(mp):
        meta = json.load(open(mp))
    tsc_hz = meta.get("tsc_hz") or 0

    fwd = [r for r in recs if r.get("kind") == "forward"]
    modes = ["privlink"] + [m for m in ("io", "macswap", "5tswap")
                            if any(r["mode"] == m for r in fwd)]
    # The peer (--peers): Open vSwitch with DPDK, its ratio to the testpmd mode the targets
    # name (5tswap, else the last one run), and privlink's ratio to it.
    peers = [m for m in ("ovs",) if any(r["mode"] == m for r in fwd)]
    peer_ref = "5tswap" if "5tswap" in modes else (modes[-1] if len(modes) > 1 else None)
    flows = sorted({r["flows"] for r in fwd})
    protos = sorted({r["proto"] for r in fwd})
    rows = []
    for proto in protos:
        for n in flows:
            sel = [r for r in fwd if r["flows"] == n and r["proto"] == proto]
            if not sel:
                continue
            row = {"proto": proto, "flows": n, "modes": {}, "ratios": {}, "notes": []}
            by_run = {}
            for r in sel:
                by_run.setdefault(r["run"], {})[r["mode"]] = r
                if r.get("note") and r["note"] not in row["notes"]:
                    row["notes"].append(r["note"])
                if r.get("memory") and r["mode"] not in ("ovs",):
                    # The peer's own memory kind, when it differs, is in its note.
                    row["memory"] = r["memory"]
            for m in modes + peers:
                mpps = [r["mpps"] for r in sel if r["mode"] == m and r.get("mpps")]
                row["modes"][m] = med_range(mpps)
            pl = [r["mpps"] for r in sel if r["mode"] == "privlink" and r.get("mpps")]
            row["cycles_per_packet"] = med_range(
                [tsc_hz / (x * 1e6) for x in pl]) if tsc_hz and pl else None
            for m in modes[1:]:
                ratios = []
                for run in by_run.values():
                    p, t = run.get("privlink"), run.get(m)
                    if p and t and p.get("mpps") and t.get("mpps"):
                        ratios.append(p["mpps"] / t["mpps"])
                row["ratios"][m] = med_range(ratios)

            def same_run(a, b):
                return med_range([run[a]["mpps"] / run[b]["mpps"] for run in by_run.values()
                                  if run.get(a) and run.get(b) and run[a].get("mpps")
                                  and run[b].get("mpps")])
            for m in peers:
                if peer_ref:
                    row["ratios"][f"{m}/{peer_ref}"] = same_run(m, peer_ref)
                row["ratios"][f"privlink/{m}"] = same_run("privlink", m)
            rows.append(row)

    # The plain runs (--sync adds runs of mode privlink+sync: sync.py reports those).
    setup = [r for r in recs if r.get("kind") == "setup" and r.get("mode", "privlink") == "privlink"]
    setup_sum = None
    if setup:
        setup_sum = {
            "syns": setup[0].get("expect"),
            "new_flows_per_s": med_range([r.get("rate") for r in setup if r.get("ok")]),
            "io_replay_pps": med_range([r.get("io_pps") for r in setup]),
            "notes": sorted({r["note"] for r in setup if r.get("note")}),
        }
    memory = [r for r in recs if r.get("kind") == "memory"]
    rss = [r for r in recs if r.get("kind") == "rss"]

    results = {"meta": meta, "forwarding": rows, "peers": peers, "peer_ref": peer_ref, "setup": setup_sum,
               "memory": memory, "rss": rss, "raw": recs}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1)

    lines = []
    lines.append(f"privlink benchmark — {meta.get('date', '')}, {meta.get('cpu', '')}, "
                 f"TSC {tsc_hz / 1e9:.2f} GHz, {meta.get('runs', '?')} run(s), "
                 f"{meta.get('warmup', '?')} s warm-up + {meta.get('measure', '?')} s "
                 f"measured per figure; median [min–max]")
    lines.append("")
    hdr = ["proto", "flows", "DPDK memory", "privlink Mpps/core", "cycles/pkt"] + \
        [f"testpmd {m} Mpps" for m in modes[1:]] + [f"privlink / {m}" for m in modes[1:]]
    peer_names = {"ovs": "OVS-DPDK ct NAT"}
    for m in peers:
        hdr.insert(5 + len(modes) - 1, f"{peer_names[m]} Mpps")
        hdr += ([f"OVS / {peer_ref}"] if peer_ref else []) + ["privlink / OVS"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|" + "---|" * len(hdr))
    for row in rows:
        cells = [row["proto"], f"{row['flows']:,}", row.get("memory", "?"),
                 fmt(row["modes"].get("privlink")),
                 fmt(row["cycles_per_packet"], digits=0)]
        cells += [fmt(row["modes"].get(m)) for m in modes[1:]]
        cells += [fmt(row["modes"].get(m), digits=3) for m in peers]
        cells += [fmt(row["ratios"].get(m), pct=True) for m in modes[1:]]
        for m in peers:
            if peer_ref:
                cells.append(fmt(row["ratios"].get(f"{m}/{peer_ref}"), pct=True))
            cells.append(fmt(row["ratios"].get(f"privlink/{m}"), times=True))
        lines.append("| " + " | ".join(cells) + " |")
    notes = [(r["proto"], r["flows"], n) for r in rows for n in r["notes"]]
    for proto, n, note in notes:
        lines.append(f"\n- {proto} {n:,} flows: {note}")
    if setup_sum:
        lines.append("")
        lines.append(f"Setup rate ({setup_sum['syns']:,} unique TCP SYNs, replayed once from "
                     f"the pcap file, first pass): "
                     f"{fmt(setup_sum['new_flows_per_s'], scale=1e-6)} M new flows/s; "
                     f"testpmd io reading the same SYNs from the file: "
                     f"≥ {fmt(setup_sum['io_replay_pps'], scale=1e-6)} Mpps (a lower bound: "
                     f"its replay of 3 × the file fits in one or two of testpmd's "
                     f"statistics periods)")
        for n in setup_sum["notes"]:
            lines.append(f"- {n}")
    if memory or rss:
        lines.append("")
        lines.append("| memory | flows | bytes/flow (table's count) | resident | resident/flow |")
        lines.append("|---|---|---|---|---|")
        for m in memory:
            lines.append(f"| FlowTable filled (examples/flow_memory) | {m['flows']:,} | "
                         f"{m['bytes_per_flow']} | +{m['rss_delta_bytes'] / 2**20:.0f} MiB "
                         f"| {m['rss_delta_bytes'] / m['flows']:.1f} B |")
        base = next((r for r in rss if r["flows_per_worker"] <= 1024), None)
        for r in rss:
            if r is base:
                continue
            per = ((r["vmrss"] - base["vmrss"]) / r["flows_per_worker"]) if base else None
            lines.append(f"| privlinkd VmRSS, flows_per_worker = {r['flows_per_worker']:,} | "
                         f"{r['flows_per_worker']:,} (capacity) | – | "
                         f"{r['vmrss'] / 2**20:.0f} MiB (+{r.get('hugetlb', 0) / 2**20:.0f} "
                         f"MiB hugepages) | "
                         f"{'%.1f B' % per if per else 'n/a'} |")
        if base:
            lines.append(f"\nprivlinkd VmRSS with flows_per_worker = {base['flows_per_worker']}: "
                         f"{base['vmrss'] / 2**20:.0f} MiB (the baseline subtracted above).")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text)
    print(text)

    # Plot.
    if os.environ.get("PRIVLINK_BENCH_NO_PLOT"):
        return
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot skipped: matplotlib is not installed (pip install matplotlib)")
        return
    for proto in protos:
        fig, ax = plt.subplots(figsize=(10, 4.8))
        for m in modes + peers:
            pts = []
            for row in rows:
                if row["proto"] != proto or not row["modes"].get(m):
                    continue
                mr = row["modes"][m]
                pts.append((row["flows"], mr["median"], mr["median"] - mr["min"],
                            mr["max"] - mr["median"], row.get("memory") == "no-huge"))
            if not pts:
                continue
            label = ("privlink (privlinkd, 1 worker)" if m == "privlink" else
                     "OVS-DPDK conntrack DNAT+SNAT (1 PMD thread)" if m == "ovs" else
                     f"testpmd {m}")
            line = ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                               yerr=[[p[2] for p in pts], [p[3] for p in pts]], marker="o",
                               capsize=3, label=label,
                               linewidth=2.5 if m == "privlink" else 1.2)
            # Points measured without hugepages (the capture did not fit): hollow.
            hollow = [p for p in pts if p[4]]
            if hollow:
                ax.plot([p[0] for p in hollow], [p[1] for p in hollow], "o", markersize=9,
                        markerfacecolor="white", color=line[0].get_color())
        for extra_dir, extra_label in (x.split(":", 1) for x in a.also):
            ex = []
            for path in glob.glob(os.path.join(extra_dir, "raw", "forward.jsonl")):
                ex += [json.loads(l) for l in open(path) if l.strip()]
            pts = {}
            for r in ex:
                if r["mode"] == "privlink" and r["proto"] == proto and r.get("mpps"):
                    pts.setdefault(r["flows"], []).append(r["mpps"])
            if pts:
                xs = sorted(pts)
                med = [statistics.median(pts[x]) for x in xs]
                ax.errorbar(xs, med, yerr=[[m - min(pts[x]) for m, x in zip(med, xs)],
                                           [max(pts[x]) - m for m, x in zip(med, xs)]],
                            marker="s", linestyle="none", capsize=3, color="tab:blue",
                            markerfacecolor="white", markersize=8, label=extra_label)
        if any(r.get("memory") == "no-huge" for r in rows if r["proto"] == proto):
            ax.plot([], [], "o", markerfacecolor="white", color="gray",
                    label="hollow: --no-huge (capture > free hugepages)")
        ax.set_xscale("log")
        ax.set_xlabel("concurrent flows in the replayed capture")
        ax.set_ylabel("Mpps, one forwarding core")
        ax.set_title(f"64-byte {proto.upper()} frames, net_pcap replay → net_null "
                     f"(median, min–max of {meta.get('runs', '?')} runs)", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        name = "mpps.png" if proto == "udp" else f"mpps-{proto}.png"
        fig.savefig(os.path.join(out, name), dpi=110)
        print(f"plot: {os.path.join(out, name)}")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("stats")
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--measure", type=float, default=5)
    s.add_argument("--deadline", type=float, default=10)
    s = sub.add_parser("setup")
    s.add_argument("stats")
    s.add_argument("--expect", type=int, required=True)
    s.add_argument("--deadline", type=float, default=120)
    s.add_argument("--stall", type=float, default=3)
    s = sub.add_parser("testpmd")
    s.add_argument("log")
    s.add_argument("--port", type=int, default=1)
    s.add_argument("--skip", type=int, default=0)
    s.add_argument("--take", type=int, default=0)
    s.add_argument("--drop-last", action="store_true")
    s.add_argument("--max", action="store_true", help="the best reading, not the mean")
    s.add_argument("--count-only", action="store_true")
    s = sub.add_parser("testpmd-watch")
    s.add_argument("log")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--port", type=int, default=1)
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--measure", type=float, default=5)
    s.add_argument("--startup", type=float, default=60)
    s.add_argument("--once", action="store_true",
                   help="a capture replayed once: the full readings between its ends")
    s = sub.add_parser("ovs-sample")
    s.add_argument("bridge", help="what ovs-ofctl takes: unix:RUNDIR/BRIDGE.mgmt")
    s.add_argument("--tx-port", type=int, default=2)
    s.add_argument("--rx-port", type=int, default=1)
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--measure", type=float, default=5)
    s.add_argument("--startup", type=float, default=60)
    s = sub.add_parser("report")
    s.add_argument("out")
    s.add_argument("--also", action="append", default=[], metavar="DIR:LABEL",
                   help="also plot the privlinkd points of another run's OUT directory")
    a = ap.parse_args()
    {"sample": cmd_sample, "setup": cmd_setup, "testpmd": cmd_testpmd,
     "testpmd-watch": cmd_testpmd_watch, "ovs-sample": cmd_ovs_sample,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
