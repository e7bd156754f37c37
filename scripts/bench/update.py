#!/usr/bin/env python3
"""Update under load (scripts/bench.sh --update): does forwarding stall while privlinkd
publishes a snapshot holding 10k or 100k endpoints?

  update.py config CONFIG --endpoints N
      widens the consumer VPC of a filled-in bench configuration to 10.0.0.1/11 and
      declares N more endpoints of the bench service there (10.4.0.1 onwards, room for
      1.8M), so that
      privlinkd starts with N + 1 endpoints; turns on a 10 ms stats log.
  update.py run DIR --changes K [--warmup S] [--gap S] [--deadline S]
      privlinkd is running from DIR (bench.sh started it) and forwarding the replay.
      After the warm-up, K times: create an endpoint through the management socket, wait,
      delete it, wait. Each request makes privlinkd save its state and build and publish
      a whole new snapshot. Then reads DIR/stats.jsonl (the worker's counters, published
      every 10 ms, with the snapshot generation it forwarded with) and DIR/privlinkd.log
      (build-and-publish times) and prints one JSON object: publish times, request round
      trips, and packets per 10 ms window before, during and after the changes.
  update.py queries DIR [--seconds S] [--warmup S]
      privlinkd is running from DIR and forwarding the replay. Measures packets per 10 ms
      window for S seconds quiet; S seconds while a client calls `stats` and `flows`
      (MaxResults 10000) back to back; S seconds quiet again. Prints one JSON object with
      the median and worst window of each span and the request rates; the figure is the
      median during the calls over the median before (workers answer with a budget of
      flow slots per poll, so it must stay at 1).
  update.py plot OUT
      OUT/raw/update.jsonl -> OUT/update.png (packets per 10 ms window against time, the
      changes marked), when matplotlib is installed.
  update.py check
      the address plan's promises, for every run size up to the quota's ceiling: the
      declared endpoints and those the changes create are all in the /11 and never meet
      (exit 1 otherwise; scripts/test.sh runs it).
  update.py table OUT
      OUT/raw/update.jsonl -> OUT/update.md and stdout: per endpoint count, median
      [min-max] over the runs of the publish time, the request round trip and packets
      per 10 ms window before, during (worst and median) and after.
"""

import argparse
import json
import os
import re
import socket
import statistics
import sys
import time

SERVICE_NAME = "com.privlink.vpce.local.vpce-svc-0d0000000000000d1"
CONSUMER_VPC = "vpc-0c0000000000000c1"
WINDOW_MS = 10


# The largest endpoints_per_vpc a configuration may set (MAX_QUOTA, mgmt/src/config.rs).
QUOTA_MAX = 1_000_000

# Where the declared endpoints start, and where the endpoints a change creates do: past
# the last declared one of the largest run (10.4.0.1 + 1M is 10.19.66.65), inside the /11.
DECLARED_BASE = (10 << 24) | (4 << 16) | 1
CHANGE_BASE = (10 << 24) | (24 << 16) | 1


def ip_at(base, i):
    n = base + i
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def cmd_config(a):
    text = open(a.config).read()
    old = 'address = "10.1.0.1/16"'
    if old not in text:
        sys.exit(f"update.py: {a.config} has no consumer address {old}")
    # /11: from 10.4.0.1 up to 10.31.255.254, room for the 1M-endpoint run (a /12 held
    # only ~786k).
    text = text.replace(old, 'address = "10.0.0.1/11"')
    if DECLARED_BASE + a.endpoints >= CHANGE_BASE:
        sys.exit(f"update.py: {a.endpoints} endpoints do not fit in 10.4.0.1-10.23.255.255 "
                 "(10.24.0.1 on is for the changes)")
    if "stats_interval_ms = 100" not in text:
        sys.exit(f"update.py: {a.config} has no [mgmt] stats_interval_ms = 100 to lower")
    text = text.replace("stats_interval_ms = 100", 'stats_interval_ms = 10\nstats_log = "%s"'
                        % os.path.join(os.path.dirname(os.path.abspath(a.config)), "stats.jsonl"), 1)
    if "[quotas]" in text:
        sys.exit(f"update.py: {a.config} already has a [quotas] section")
    base = DECLARED_BASE
    # The cloud's default of 50 endpoints per VPC would refuse the declarations; the
    # benchmark creates one more at a time.
    # The quota's ceiling is the model's, 1M per VPC: the bench endpoint and the one a
    # change creates must fit beside the declared ones.
    if a.endpoints > QUOTA_MAX - 2:
        sys.exit(f"update.py: {a.endpoints} endpoints leave no room under the 1M quota ceiling")
    out = [text, "\n[quotas]\nendpoints_per_vpc = %d\n" % min(a.endpoints + 64, QUOTA_MAX),
           "\n# update-under-load: the endpoints the snapshot carries\n"]
    for i in range(a.endpoints):
        out.append(
            '[[endpoints]]\nid = "vpce-1%016x"\nowner = "111111111111"\nvpc_id = "%s"\n'
            'service_id = "vpce-svc-0d0000000000000d1"\nip = "%s"\nstate = "available"\n'
            % (i, CONSUMER_VPC, ip_at(base, i)))
    tmp = a.config + ".tmp"
    with open(tmp, "w") as f:
        f.write("".join(out))
    os.replace(tmp, a.config)


class Mgmt:
    """privlinkd's management socket: one JSON request per line, one answer per line."""

    def __init__(self, path, timeout):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.next_id = 1

    def call(self, op, args):
        req = {"id": self.next_id, "op": op, "args": args}
        self.next_id += 1
        self.sock.sendall((json.dumps(req) + "\n").encode())
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("privlinkd closed the management connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        resp = json.loads(line)
        if "ok" not in resp:
            raise OSError(f"{op} refused: {resp.get('error')}")
        return resp["ok"]


def read_log(path):
    """The stats log's lines, summed over workers per read (t_ms)."""
    rows = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    pass  # a line being written
    except OSError:
        pass
    return rows


def last_t_ms(path):
    rows = read_log(path)
    return rows[-1]["t_ms"] if rows else None


def windows(rows):
    """Per worker, (start_ms, end_ms, packets per 10 ms) between consecutive publications
    (the worker's own clock), merged over workers by summing equal starts."""
    by_worker = {}
    for r in rows:
        pts = by_worker.setdefault(r["worker"], {})
        pts[r["at_ms"]] = r  # the same publication read twice counts once
    out = {}
    gaps = []
    for pts in by_worker.values():
        ordered = [pts[k] for k in sorted(pts)]
        for prev, cur in zip(ordered, ordered[1:]):
            dt = cur["at_ms"] - prev["at_ms"]
            if dt <= 0:
                continue
            gaps.append((prev["at_ms"], dt))
            rate = (cur["tx_packets"] - prev["tx_packets"]) * WINDOW_MS / dt
            key = prev["at_ms"]
            s, e, v = out.get(key, (key, cur["at_ms"], 0.0))
            out[key] = (s, e, v + rate)
    return [out[k] for k in sorted(out)], gaps


def in_span(w, lo, hi):
    return w[1] > lo and w[0] < hi


def cmd_run(a):
    stats_log = os.path.join(a.dir, "stats.jsonl")
    sock_path = os.path.join(a.dir, "privlink.sock")
    deadline = time.time() + a.deadline
    # Forwarding first: the replay's flows are created in the first pass.
    while time.time() < deadline:
        rows = read_log(stats_log)
        if rows and rows[-1]["tx_packets"] > 0:
            break
        time.sleep(0.05)
    else:
        print(json.dumps({"ok": False, "error": "no forwarding seen in the stats log"}))
        return 1
    time.sleep(a.warmup)
    mgmt = Mgmt(sock_path, timeout=max(30.0, a.deadline / 2))
    changes = []
    start_ms = last_t_ms(stats_log)
    time.sleep(a.gap)
    for k in range(a.changes):
        ip = ip_at(CHANGE_BASE, k)
        for op in ("create", "delete"):
            if time.time() > deadline:
                break
            t0 = last_t_ms(stats_log)
            w0 = time.monotonic()
            if op == "create":
                r = mgmt.call("create-vpc-endpoint", {
                    "VpcId": CONSUMER_VPC, "ServiceName": SERVICE_NAME, "IpAddress": ip})
                ep = r["VpcEndpoint"]["VpcEndpointId"]
            else:
                mgmt.call("delete-vpc-endpoints", {"VpcEndpointIds": [ep]})
            rtt = (time.monotonic() - w0) * 1000
            # The stats log is read every 10 ms: wait for a line stamped after the answer.
            time.sleep(0.03)
            changes.append({"op": op + "-vpc-endpoint", "from_ms": t0,
                            "to_ms": last_t_ms(stats_log), "rtt_ms": rtt})
            if op == "delete":
                # A deleting endpoint still counts against endpoints_per_vpc until the
                # next tick makes it deleted: at the quota's ceiling (--update 999998)
                # the next create would be refused, so wait for that (bounded).
                while time.time() < deadline:
                    try:
                        r = mgmt.call("describe-vpc-endpoints", {"VpcEndpointIds": [ep]})
                    except Exception:  # already forgotten: gone from the count too
                        break
                    states = [e.get("State") for e in r.get("VpcEndpoints", [])]
                    if all(s == "deleted" for s in states):
                        break
                    time.sleep(0.1)
            time.sleep(a.gap)
    end_ms = last_t_ms(stats_log)

    rows = read_log(stats_log)
    wins, gaps = windows(rows)
    log_text = open(os.path.join(a.dir, "privlinkd.log"), errors="replace").read()
    builds = [(int(g), int(n), float(ms)) for g, n, ms in re.findall(
        r"snapshot (\d+): \d+ services, (\d+) endpoints, built and published in ([0-9.]+) ms",
        log_text)]
    # Only the management thread's builds have this form (the start's is logged otherwise).
    publish = [ms for _, _, ms in builds]
    endpoints = builds[-1][1] if builds else None

    first = changes[0]["from_ms"] if changes else end_ms
    before = [w[2] for w in wins if start_ms <= w[0] and w[1] <= first]
    during = [w for w in wins if any(in_span(w, c["from_ms"], c["to_ms"] + 2 * WINDOW_MS)
                                     for c in changes)]
    between = [w[2] for w in wins if w[0] >= first and w[1] <= end_ms and w not in during]
    # The same test on the windows with no change in flight: on a shared machine they
    # dip too, and a change is to blame only for what it adds.
    def under(vs):
        if not vs or not med_before:
            return None
        return sum(1 for v in vs if v < 0.9 * med_before) / len(vs)

    after_lo = changes[-1]["to_ms"] + 2 * WINDOW_MS if changes else end_ms
    after = [w[2] for w in wins if after_lo <= w[0] and w[1] <= end_ms]
    during_v = [w[2] for w in during]
    med_before = statistics.median(before) if before else None
    worst_gap = max((dt for at, dt in gaps if start_ms <= at <= end_ms), default=None)
    res = {
        "ok": bool(before and during_v and after),
        "endpoints": endpoints,
        "changes": changes,
        "publish_ms": publish,
        "rtt_ms": [c["rtt_ms"] for c in changes],
        "windows_before": len(before),
        "windows_during": len(during_v),
        "before_median": med_before,
        "during_min": min(during_v) if during_v else None,
        "during_median": statistics.median(during_v) if during_v else None,
        "between_median": statistics.median(between) if between else None,
        "between_min": min(between) if between else None,
        "under_90_during": under(during_v),
        "under_90_between": under(between),
        "after_median": statistics.median(after) if after else None,
        # A window under half the median before it: a stall, however short.
        "stalled_windows": sum(1 for v in during_v if med_before and v < med_before / 2),
        # Largest gap between the worker publications the stats thread sampled: a check
        # on the sampling (a worker stall shows as a low window, not as a gap).
        "worst_sample_gap_ms": worst_gap,
        "series": [[w[0], round(w[2])] for w in wins if start_ms <= w[0] <= end_ms],
    }
    print(json.dumps(res))
    return 0 if res["ok"] else 1


def cmd_queries(a):
    stats_log = os.path.join(a.dir, "stats.jsonl")
    sock_path = os.path.join(a.dir, "privlink.sock")
    deadline = time.time() + 60 + 4 * a.seconds
    while time.time() < deadline:
        rows = read_log(stats_log)
        if rows and rows[-1]["tx_packets"] > 0:
            break
        time.sleep(0.05)
    else:
        print(json.dumps({"ok": False, "error": "no forwarding seen in the stats log"}))
        return 1
    time.sleep(a.warmup)
    mgmt = Mgmt(sock_path, timeout=30.0)
    spans = {}
    res = {}

    def quiet(name):
        t = last_t_ms(stats_log)
        time.sleep(a.seconds)
        spans[name] = (t, last_t_ms(stats_log))

    def loop(name, calls):
        # The same client, the same pace of requests: only what they ask differs.
        n = {op: 0 for op, _ in calls}
        rtts = []
        listed = 0
        t = last_t_ms(stats_log)
        end = time.monotonic() + a.seconds
        while time.monotonic() < end:
            for op, args in calls:
                w0 = time.monotonic()
                r = mgmt.call(op, args)
                rtts.append((time.monotonic() - w0) * 1000)
                n[op] += 1
                if op == "flows":
                    listed = max(listed, len(r.get("Flows", [])))
        spans[name] = (t, last_t_ms(stats_log))
        res[name + "_calls"] = n
        res[name + "_rtt_ms_median"] = statistics.median(rtts) if rtts else None
        if listed:
            res["flows_listed"] = listed

    quiet("before")
    loop("queries", [("stats", {}), ("flows", {"MaxResults": 10000})])
    quiet("after")
    time.sleep(0.05)
    wins, _ = windows(read_log(stats_log))
    for name, (lo, hi) in spans.items():
        v = [w[2] for w in wins if lo <= w[0] and w[1] <= hi]
        res[name + "_windows"] = len(v)
        res[name + "_median"] = statistics.median(v) if v else None
        res[name + "_min"] = min(v) if v else None

    def ratio(x, y):
        return res[x] / res[y] if res.get(x) and res.get(y) else None

    res["queries_vs_before"] = ratio("queries_median", "before_median")
    res["after_vs_before"] = ratio("after_median", "before_median")
    res["ok"] = all(res.get(n + "_windows") for n in spans) and res["queries_calls"]["stats"] > 0
    print(json.dumps(res))
    return 0 if res["ok"] else 1


def cmd_plot(a):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("update plot skipped: matplotlib is not installed (pip install matplotlib)")
        return 0
    path = os.path.join(a.out, "raw", "update.jsonl")
    runs = [json.loads(l) for l in open(path) if l.strip()]
    runs = [r for r in runs if r.get("series")]
    if not runs:
        return 0
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), squeeze=False)
    for ax, r in zip(axes[:, 0], runs):
        t0 = r["series"][0][0]
        ax.plot([(t - t0) / 1000 for t, _ in r["series"]], [v for _, v in r["series"]],
                lw=0.7, color="tab:blue")
        for c in r["changes"]:
            ax.axvspan((c["from_ms"] - t0) / 1000, (c["to_ms"] - t0) / 1000, color="tab:red",
                       alpha=0.25, lw=0)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("packets / 10 ms")
        ax.set_title(f"{r.get('endpoints')} endpoints, run {r.get('run')}: red = a change "
                     f"being saved, built and published", fontsize=9)
        ax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "update.png"), dpi=110)
    print(f"plot: {os.path.join(a.out, 'update.png')}")
    return 0


def cmd_check(_a):
    prefix, size = (10 << 24), 1 << 21  # 10.0.0.0/11
    changes = 1000
    problems = []
    for n in (1, 10_000, 100_000, QUOTA_MAX - 2):
        declared = range(DECLARED_BASE, DECLARED_BASE + n)
        made = range(CHANGE_BASE, CHANGE_BASE + changes)
        if not (prefix <= declared.start and declared.stop <= made.start
                and made.stop <= prefix + size - 1):
            problems.append(f"{n} endpoints: declared {ip_at(declared.start, 0)}-"
                            f"{ip_at(declared.stop - 1, 0)}, changes from {ip_at(made.start, 0)}")
    for p in problems:
        print(f"update.py check: {p}", file=sys.stderr)
    print("update.py check: " + ("failed" if problems else "ok"))
    return 1 if problems else 0


def cmd_table(a):
    path = os.path.join(a.out, "raw", "update.jsonl")
    runs = [json.loads(l) for l in open(path) if l.strip()]

    def mr(xs, fmt="{:,.0f}"):
        xs = sorted(x for x in xs if x is not None)
        if not xs:
            return "n/a"
        return f"{fmt.format(statistics.median(xs))} [{fmt.format(xs[0])}–{fmt.format(xs[-1])}]"

    lines = [
        "| endpoints | runs × changes | publish (build + swap), ms | request round trip "
        "(save + publish), ms | packets / 10 ms before | during, worst window | during, "
        "median | after | worst / before | windows under half | worst / before with no "
        "change in flight | windows under 90 %: during, with none in flight |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r.get("declared") for r in runs}):
        rs = [r for r in runs if r.get("declared") == n]
        worst = [r["during_min"] / r["before_median"] for r in rs
                 if r.get("during_min") and r.get("before_median")]
        lines.append(
            f"| {n + 1:,} | {len(rs)} × {len(rs[0].get('changes', []))} "
            f"| {mr([x for r in rs for x in r.get('publish_ms', [])], '{:.1f}')} "
            f"| {mr([x for r in rs for x in r.get('rtt_ms', [])])} "
            f"| {mr([r.get('before_median') for r in rs])} "
            f"| {mr([r.get('during_min') for r in rs])} "
            f"| {mr([r.get('during_median') for r in rs])} "
            f"| {mr([r.get('after_median') for r in rs])} "
            f"| {mr([100 * w for w in worst], '{:.0f} %')} "
            f"| {sum(r.get('stalled_windows', 0) for r in rs)} "
            f"| {mr([100 * r['between_min'] / r['before_median'] for r in rs if r.get('between_min') and r.get('before_median')], '{:.0f} %')} "
            f"| {mr([100 * r['under_90_during'] for r in rs if r.get('under_90_during') is not None], '{:.0f} %')}, "
            f"{mr([100 * r['under_90_between'] for r in rs if r.get('under_90_between') is not None], '{:.0f} %')} |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "update.md"), "w") as f:
        f.write(text)
    print(text)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("config")
    s.add_argument("config")
    s.add_argument("--endpoints", type=int, required=True)
    s = sub.add_parser("run")
    s.add_argument("dir")
    s.add_argument("--changes", type=int, default=3)
    s.add_argument("--warmup", type=float, default=2)
    s.add_argument("--gap", type=float, default=1)
    s.add_argument("--deadline", type=float, default=120)
    s = sub.add_parser("queries")
    s.add_argument("dir")
    s.add_argument("--seconds", type=float, default=5)
    s.add_argument("--warmup", type=float, default=2)
    s = sub.add_parser("plot")
    s.add_argument("out")
    s = sub.add_parser("table")
    s.add_argument("out")
    sub.add_parser("check")
    a = ap.parse_args()
    return {"config": cmd_config, "run": cmd_run, "queries": cmd_queries, "plot": cmd_plot,
            "table": cmd_table, "check": cmd_check}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
