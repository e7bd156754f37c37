#!/usr/bin/env python3
"""What health probes cost the workers (scripts/bench.sh --probes, issue 11): the forward
measurement of the smallest capture run again with a listener whose many targets are
health-checked, and compared with the plain run of the same round.

  probes.py config CONFIG --targets N [--port P] [--target-port Q] [--interval S]
                   [--timeout S] [--threshold K]
      edits a filled-in bench configuration: the provider attachment gets a gateway
      (10.2.0.254, with a static neighbour, so probes leave at once without ARP) and the
      bench service a TCP listener on port P (8000) with N targets 172.16.x.y:Q (8080)
      beyond the provider prefix, reached through that gateway, checked with TCP every S
      (5) seconds, timeout S (2), healthy and unhealthy thresholds K (2). Nothing answers
      on net_null: each check is a SYN and its retransmission after 1 s (the timeout
      ends it before the next), and the targets go unhealthy; the listener has no flows,
      so that changes no forwarding. N above the default quota of 1000 targets per
      listener raises [quotas] targets_per_listener.
  probes.py sample STATS --warmup W --measure M [--pid PID]
      harness.py sample as it is (the same wait and the same fit of tx_packets), with a
      watcher beside it reading every stats rewrite of the span: probes_pps, the
      probes_sent increase over the time between the span's first and last rewrite; with
      --pid (privlinkd), tx_per_cpu_s, tx_packets fitted against the worker thread's own
      CPU time (schedstat), which leaves out what other processes on its core took
      (this machine is shared), cpu_share, that CPU time over the wall time, and
      checker_cpu_share, the health thread's. Prints one JSON object.
  probes.py toggle DIR [--pid PID] [--port P] [--spans K] [--span S] [--settle S]
                   [--warmup S]
      privlinkd is running from DIR with the probed listener (config above) and
      forwarding the replay. Turns that listener's health checks off and on through the
      management socket (ModifyListeners HealthCheckEnabled), K spans in turn starting
      with them on, S seconds measured in each after S' seconds to settle (the change
      publishes a snapshot), with the figures of `sample` per span. One process, so the
      start-to-start spread of separate runs (where the DPDK memory lands) is not in the
      comparison. The ratio of each inner span to the mean of its two neighbours (a
      linear drift cancels), as on / off; prints one JSON object.
  probes.py report OUT
      after harness.py report: pairs each round's privlink+probes run with the plain
      privlink run (and testpmd 5tswap, when run) of the same round and flow count; the
      ratio privlink+probes / privlink, median [min–max] of the rounds, the same per
      worker CPU second, the probe rate; and the toggled spans, pooled. Adds "probes"
      and the privlink+probes mode of the forwarding rows to OUT/results.json, appends
      its table to OUT/results.md and prints it.
"""

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree for the imports below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (the bench's own measurement helpers)
import update  # noqa: E402  (its management-socket client)

MODE = "privlink+probes"
SERVICE_ID = "vpce-svc-0d0000000000000d1"
PROVIDER_ADDRESS = 'address = "10.2.0.1/24"'
GATEWAY = "10.2.0.254"
GATEWAY_MAC = "02:00:00:00:02:fe"
# The first provider neighbour of the template: the gateway's entry goes before it.
FIRST_NEIGHBOUR = '    { ip = "10.2.0.11", mac = "02:00:00:00:02:0b" },'
# From 172.16.0.1: 250 targets per /24 (.1-.250), up to 172.31.255.250.
TARGET_BASE = (172 << 24) | (16 << 16)
TARGETS_MAX = 16 * 256 * 250
# The quota a configuration holds unless it says otherwise (mgmt/src/default.toml).
DEFAULT_TARGETS_PER_LISTENER = 1000


def target_ip(i):
    n = TARGET_BASE + (i // 250) * 256 + 1 + i % 250
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def cmd_config(a):
    text = open(a.config).read()

    def need(s, what):
        if text.count(s) != 1:
            sys.exit(f"probes.py: {a.config} has no single {what} ({s.strip()})")
    need(PROVIDER_ADDRESS, "provider attachment address")
    need(FIRST_NEIGHBOUR, "first provider static neighbour")
    need("\n[[endpoints]]\n", "[[endpoints]] after the services")
    if not 1 <= a.targets <= TARGETS_MAX:
        sys.exit(f"probes.py: --targets must be 1-{TARGETS_MAX}")
    if "gateway =" in text:
        sys.exit(f"probes.py: {a.config} already has a gateway")
    text = text.replace(PROVIDER_ADDRESS, f'{PROVIDER_ADDRESS}\ngateway = "{GATEWAY}"')
    text = text.replace(FIRST_NEIGHBOUR, f'    {{ ip = "{GATEWAY}", mac = "{GATEWAY_MAC}" }},\n'
                        + FIRST_NEIGHBOUR)
    listener = [
        "\n# probes (bench.sh --probes): targets beyond the provider prefix, through the gateway,"
        "\n# health-checked; no endpoint traffic goes to this listener.",
        "[[services.listeners]]",
        'protocol = "tcp"',
        f"port = {a.port}",
        'health_check_protocol = "tcp"',
        f"health_check_interval_seconds = {a.interval}",
        f"health_check_timeout_seconds = {a.timeout}",
        f"healthy_threshold_count = {a.threshold}",
        f"unhealthy_threshold_count = {a.threshold}",
        "targets = [",
    ]
    listener += [f'    {{ ip = "{target_ip(i)}", port = {a.target_port} }},'
                 for i in range(a.targets)]
    listener.append("]\n")
    text = text.replace("\n[[endpoints]]\n", "\n".join(listener) + "\n[[endpoints]]\n", 1)
    if a.targets > DEFAULT_TARGETS_PER_LISTENER:
        if "[quotas]" in text:
            sys.exit(f"probes.py: {a.config} already has a [quotas] section")
        text += f"\n[quotas]\ntargets_per_listener = {a.targets}\n"
    tmp = a.config + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, a.config)


def probe_counters(stats):
    t = stats["total"]
    return t.get("probes_sent", 0), t.get("probe_replies", 0)


def thread_cpu_s(pid, name="rte-worker"):
    """CPU time in s the threads of `pid` whose name starts with `name` have run (the DPDK
    workers, rte-worker-N, by default), from /proc/PID/task/TID/schedstat (ns on the CPU;
    time another process or the hypervisor held the core is not in it), or None."""
    if not pid:
        return None
    total, found = 0, False
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith(name):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
            found = True
    except (OSError, ValueError, IndexError):
        return None
    return total / 1e9 if found else None


class Watch:
    """Every stats rewrite while it runs (a thread polling every 10 ms): (write time,
    worker CPU s, tx_packets, probes_sent, probe_replies, probe_backlog drops, the health
    checker thread's CPU s)."""

    def __init__(self, stats, pid):
        self.stats, self.pid, self.rows = stats, pid, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        last = 0
        while not self.stop.is_set():
            s = harness.read_stats(self.stats)
            if s is not None and s[0] > last:
                last = s[0]
                cpu = thread_cpu_s(self.pid)
                tot = s[1]["total"]
                self.rows.append((s[0], cpu, tot["tx_packets"], *probe_counters(s[1]),
                                  tot.get("drops", {}).get("probe_backlog", 0),
                                  thread_cpu_s(self.pid, "privlink-health")))
            time.sleep(0.01)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    def summary(self, t0=None, t1=None):
        """Over the rewrites between t0 and t1 (all when None): tx_pps (fit against write
        time), tx_per_cpu_s (fit against the worker's CPU time: packets per second the
        worker ran), cpu_share (its CPU time over the wall time), probes_pps,
        checker_cpu_share (the health thread's CPU time over the wall time)."""
        rows = [r for r in self.rows if (t0 is None or r[0] >= t0) and (t1 is None or r[0] <= t1)]
        if len(rows) < 2 or rows[-1][0] <= rows[0][0]:
            return {"probes_pps": None, "probes_error": "fewer than 2 stats rewrites"}
        a, b = rows[0], rows[-1]
        span = b[0] - a[0]
        out = {
            "tx_pps": harness.fit([(r[0], r[2]) for r in rows]),
            "probes_sent_delta": b[3] - a[3],
            "probe_replies_delta": b[4] - a[4],
            "probes_seconds": round(span, 3),
            "probes_pps": (b[3] - a[3]) / span,
            "probes_sent": b[3],
            "probe_backlog": b[5],
            "rewrites": len(rows),
        }
        if all(r[1] is not None for r in rows):
            out["tx_per_cpu_s"] = harness.fit([(r[1], r[2]) for r in rows])
            out["cpu_share"] = (b[1] - a[1]) / span
        if a[6] is not None and b[6] is not None:
            out["checker_cpu_share"] = (b[6] - a[6]) / span
        return out


def cmd_sample(a):
    # harness.py sample sleeps the warm-up, then fits over the measure span from the
    # rewrite there is: the same here, run as is, with a watcher beside it for the probe
    # counters and the worker's CPU time over the same span.
    time.sleep(a.warmup)
    buf = io.StringIO()
    with Watch(a.stats, a.pid) as w, contextlib.redirect_stdout(buf):
        harness.cmd_sample(argparse.Namespace(stats=a.stats, warmup=0, measure=a.measure,
                                              deadline=a.deadline))
    out = json.loads(buf.getvalue())
    extra = w.summary()
    extra.pop("tx_pps", None)  # the harness's own fit is the figure
    out.update(extra)
    print(json.dumps(out))


def cmd_toggle(a):
    deadline = time.time() + a.warmup + (a.spans + 1) * (a.span + a.settle) + 60
    time.sleep(a.warmup)
    # One span's time more before the first: every round of 2026-12-05 had its first
    # span (checks on, right after the warm-up) slower than the rest (mean ratio 0.947
    # against ~1.0 for the others), and as the first span's neighbour's that skewed the
    # first ratio of every round. What is measured is the probes' steady cost.
    time.sleep(a.span + a.settle)
    mgmt = update.Mgmt(os.path.join(a.dir, "privlink.sock"), timeout=30)
    stats = os.path.join(a.dir, "stats.json")
    spans = []
    with Watch(stats, a.pid) as w:
        try:
            for k in range(a.spans):
                on = k % 2 == 0
                if k:  # the listener starts with its checks on
                    mgmt.call("modify-vpc-endpoint-service-configuration", {
                        "ServiceId": SERVICE_ID,
                        "ModifyListeners": [{"Protocol": "tcp", "Port": a.port,
                                             "HealthCheckEnabled": on}]})
                    time.sleep(a.settle)
                t0 = time.time()
                time.sleep(a.span)
                if time.time() > deadline:
                    break
                s = w.summary(t0, time.time())
                s["on"] = on
                spans.append(s)
        except OSError as e:
            print(json.dumps({"ok": False, "error": str(e), "spans": spans}))
            return

    def ratios(key):
        # Each inner span over the mean of its two neighbours (so a linear drift cancels),
        # as on / off.
        out = []
        for i in range(1, len(spans) - 1):
            mid = spans[i].get(key)
            l, r = spans[i - 1].get(key), spans[i + 1].get(key)
            if mid and l and r:
                x = mid / ((l + r) / 2)
                out.append(x if spans[i]["on"] else 1 / x)
        return out
    med = harness.med_range
    wall, cpu = ratios("tx_pps"), ratios("tx_per_cpu_s")
    print(json.dumps({
        "ok": bool(wall), "spans": spans, "ratios": wall, "ratio": med(wall),
        "cpu_ratios": cpu, "cpu_ratio": med(cpu),
        "cpu_share": med([s.get("cpu_share") for s in spans]),
        "on_probes_pps": med([s.get("probes_pps") for s in spans if s["on"]]),
        "off_probes_pps": med([s.get("probes_pps") for s in spans if not s["on"]]),
        "span_s": a.span, "settle_s": a.settle,
    }))


def cmd_report(a):
    def jsonl(name):
        return harness.raw_records(a.out, name)
    recs = jsonl("forward.jsonl")
    toggles = jsonl("probes_toggle.jsonl")
    probed = [r for r in recs if r.get("mode") == MODE]
    if not probed:
        return
    med = harness.med_range
    rows = []
    for proto, n in sorted({(r["proto"], r["flows"]) for r in probed}):
        by_run = {}
        for r in recs:
            if r["proto"] == proto and r["flows"] == n:
                by_run.setdefault(r["run"], {})[r["mode"]] = r
        runs = [by_run[k] for k in sorted(by_run)]

        def get(run, mode, key):
            r = run.get(mode)
            if not r:
                return None
            return r.get("mpps") if key == "mpps" else (r.get("sample") or {}).get(key)

        def each(mode, key):
            return [get(run, mode, key) for run in runs]

        def ratios(x, y, key="mpps"):
            return [get(run, x, key) / get(run, y, key) for run in runs
                    if get(run, x, key) and get(run, y, key)]
        row = {
            "proto": proto, "flows": n,
            "targets": next((r["probe_targets"] for r in probed if r.get("probe_targets")), None),
            "privlink": med(each("privlink", "mpps")),
            MODE: med(each(MODE, "mpps")),
            "5tswap": med(each("5tswap", "mpps")),
            "ratio": med(ratios(MODE, "privlink")),
            "privlink/5tswap": med(ratios("privlink", "5tswap")),
            MODE + "/5tswap": med(ratios(MODE, "5tswap")),
            # Packets per second the worker was on its CPU (schedstat), and that share.
            "privlink_per_cpu_s": med(each("privlink", "tx_per_cpu_s")),
            MODE + "_per_cpu_s": med(each(MODE, "tx_per_cpu_s")),
            "ratio_per_cpu_s": med(ratios(MODE, "privlink", "tx_per_cpu_s")),
            "cpu_share": med(each("privlink", "cpu_share") + each(MODE, "cpu_share")),
            "probes_pps": med(each(MODE, "probes_pps")),
            "checker_cpu_share": med(each(MODE, "checker_cpu_share")),
            "baseline_checker_cpu_share": med(each("privlink", "checker_cpu_share")),
            "baseline_probes_pps": med(each("privlink", "probes_pps")),
            "probe_backlog": max([x or 0 for x in each(MODE, "probe_backlog")]),
            "per_run": [{"run": k, **{m: by_run[k].get(m, {}).get("mpps")
                                      for m in ("privlink", MODE, "5tswap")},
                         "probes_pps": get(by_run[k], MODE, "probes_pps")}
                        for k in sorted(by_run)],
        }
        tg = [r for r in toggles if r["proto"] == proto and r["flows"] == n and r.get("ok")]
        row["toggle"] = {
            "runs": len(tg),
            "spans_per_run": len(tg[0]["spans"]),
            "span_s": tg[0]["span_s"],
            # Every inner span of every run, over the mean of its neighbours, as on / off.
            "ratio": med([x for r in tg for x in r.get("ratios") or []]),
            "ratio_per_cpu_s": med([x for r in tg for x in r.get("cpu_ratios") or []]),
            "cpu_share": med([s.get("cpu_share") for r in tg for s in r["spans"]]),
            "on_probes_pps": med([s.get("probes_pps") for r in tg for s in r["spans"] if s["on"]]),
            "off_probes_pps": med([s.get("probes_pps") for r in tg for s in r["spans"]
                                   if not s["on"]]),
        } if tg else None
        rows.append(row)

    rp = os.path.join(a.out, "results.json")
    if os.path.exists(rp):
        with open(rp) as f:
            results = json.load(f)
        results["probes"] = rows
        for fr in results.get("forwarding", []):
            for row in rows:
                if fr["proto"] == row["proto"] and fr["flows"] == row["flows"]:
                    fr["modes"][MODE] = row[MODE]
                    fr["ratios"][MODE + "/privlink"] = row["ratio"]
        with open(rp + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(rp + ".tmp", rp)

    f = harness.fmt
    lines = ["", "Health probes (--probes): a TCP listener of N targets checked every 5 s "
             "(timeout 2 s; nothing answers). Separate runs: privlink and privlink+probes "
             "back to back in each round, in turn first; median [min–max] of the rounds. "
             "One process: the probed listener's checks turned off and on in turn while it "
             "forwards, each inner span over the mean of its neighbours. \"per CPU s\": "
             "packets over the worker thread's time on its CPU (schedstat), which leaves "
             "out what other processes on the core took.", "",
             "| proto | flows | targets | comparison | without Mpps | with Mpps | "
             "with / without | per CPU s: with / without | worker on its CPU | "
             "probes sent/s | testpmd 5tswap Mpps |",
             "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['proto']} | {r['flows']:,} | {r['targets'] or '?'} | separate runs | "
            f"{f(r['privlink'])} | {f(r[MODE])} | {f(r['ratio'], digits=4)} | "
            f"{f(r['ratio_per_cpu_s'], digits=4)} | {f(r['cpu_share'], pct=True)} | "
            f"{f(r['probes_pps'], digits=0)} | {f(r['5tswap'])} |")
        tg = r["toggle"]
        if tg:
            lines.append(
                f"| {r['proto']} | {r['flows']:,} | {r['targets'] or '?'} | one process, "
                f"{tg['runs']} × {tg['spans_per_run']} spans of {tg['span_s']:g} s | | | "
                f"{f(tg['ratio'], digits=4)} | {f(tg['ratio_per_cpu_s'], digits=4)} | "
                f"{f(tg['cpu_share'], pct=True)} | {f(tg['on_probes_pps'], digits=0)} on, "
                f"{f(tg['off_probes_pps'], digits=1)} off | |")
    for r in rows:
        lines.append(f"\n- {r['proto']} {r['flows']:,} flows: privlink / 5tswap "
                     f"{f(r['privlink/5tswap'], pct=True)}, privlink+probes / 5tswap "
                     f"{f(r[MODE + '/5tswap'], pct=True)}")
        if r["baseline_probes_pps"]:
            lines.append(f"- the runs without sent {f(r['baseline_probes_pps'], digits=1)} "
                         f"probes/s (the bench listeners' own checks, default settings)")
        if r["checker_cpu_share"]:
            lines.append(f"- the health checker thread (not a worker; on the main lcore's "
                         f"CPU) ran {f(r['checker_cpu_share'], pct=True)} of the time with "
                         f"the probes, {f(r['baseline_checker_cpu_share'], pct=True)} without")
        if r["probe_backlog"]:
            lines.append(f"- probe_backlog drops: {r['probe_backlog']}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "results.md"), "a") as f:
        f.write(text)
    print(text)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("config")
    s.add_argument("config")
    s.add_argument("--targets", type=int, default=1000)
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--target-port", type=int, default=8080)
    s.add_argument("--interval", type=int, default=5)
    s.add_argument("--timeout", type=int, default=2)
    s.add_argument("--threshold", type=int, default=2)
    s = sub.add_parser("sample")
    s.add_argument("stats")
    s.add_argument("--pid", type=int, help="privlinkd, for its worker threads' CPU time")
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--measure", type=float, default=5)
    s.add_argument("--deadline", type=float, default=10)
    s = sub.add_parser("toggle")
    s.add_argument("dir")
    s.add_argument("--pid", type=int, help="privlinkd, for its worker threads' CPU time")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--spans", type=int, default=7)
    s.add_argument("--span", type=float, default=3)
    s.add_argument("--settle", type=float, default=1)
    s.add_argument("--warmup", type=float, default=2)
    s = sub.add_parser("report")
    s.add_argument("out")
    a = ap.parse_args()
    {"config": cmd_config, "sample": cmd_sample, "toggle": cmd_toggle,
     "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
