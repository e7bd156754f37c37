#!/usr/bin/env python3
"""What HA flow sync costs (scripts/bench.sh --sync, issue 12): the forward measurement of
the smallest capture and the setup-rate run made again with privlinkd as the active node
of an HA pair whose peer is a sink on the same machine, and compared with the plain runs
of the same round.

  sync.py config CONFIG --key HEX --node-port P --sink-port Q [--heartbeat-ms MS]
      edits a filled-in bench configuration: an [ha] section of two nodes on loopback,
      "bench" (this privlinkd, sync 127.0.0.1:P, priority 200) and "sink" (127.0.0.1:Q,
      priority 100), the shared key HEX, heartbeats every MS (100) ms.
  sync.py sink --listen Q --peer P --key HEX --out FILE [--heartbeat-ms MS]
      the peer: speaks the sync protocol of appliance/src/ha/wire.rs as a standby node of
      lower precedence (so privlinkd turns active on its first heartbeat and stays so),
      heartbeats every MS (20) ms, acknowledges the highest Flows seq it received (every
      10 ms and in each heartbeat), checks the HMAC tag of one datagram in 64 (all of the
      first 64), and otherwise only counts: datagrams and records by kind, distinct seqs,
      bad tags. Runs until SIGTERM or SIGINT, then writes its counts to FILE as JSON.
  sync.py report OUT
      after harness.py report: pairs each round's privlink+sync forward run with the
      plain privlink run of the same round and flow count, and each setup run with sync
      with the plain one of its round; ratios median [min–max] of the rounds, with what
      the sink received and what the node dropped (sync_dropped: a worker's export
      queue full). Adds "sync" to OUT/results.json, appends its table to
      OUT/results.md and prints it.
"""

import argparse
import hashlib
import hmac
import json
import os
import signal
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the tree for the imports below
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402  (the bench's own measurement helpers)

MODE = "privlink+sync"
# appliance/src/ha/wire.rs
MAGIC = b"PLHA"
VERSION = 1
HEADER_LEN = 15
TAG_LEN = 32
HEARTBEAT, FLOWS, ACK, BULK_REQUEST, BULK_DONE, RESYNC = 1, 2, 3, 4, 5, 6
KINDS = {HEARTBEAT: "heartbeat", FLOWS: "flows", ACK: "ack", BULK_REQUEST: "bulk_request",
         BULK_DONE: "bulk_done", RESYNC: "resync"}
ROLE_STANDBY = 2
# The sink is node 1 of the [ha] section config writes; privlinkd node 0.
SINK_INDEX = 1
NODE_INDEX = 0
SINK_PRIORITY = 100


def cmd_config(a):
    text = open(a.config).read()
    if "\n[ha]" in text:
        sys.exit("sync.py config: the configuration already has [ha]")
    bytes.fromhex(a.key)
    text += f"""
# scripts/bench/sync.py: privlinkd is the active node of a pair whose standby is a sink.
[ha]
node = "bench"
key = "{a.key}"
heartbeat_ms = {a.heartbeat_ms}
nodes = [
    {{ name = "bench", sync = "127.0.0.1:{a.node_port}", priority = 200 }},
    {{ name = "sink", sync = "127.0.0.1:{a.sink_port}", priority = {SINK_PRIORITY} }},
]
"""
    with open(a.config + ".tmp", "w") as f:
        f.write(text)
    os.replace(a.config + ".tmp", a.config)


class Sink:
    def __init__(self, a):
        self.key = bytes.fromhex(a.key)
        self.peer = ("127.0.0.1", a.peer)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # Room for bursts while this process waits for the CPU it shares with privlinkd's
        # own threads; what still overflows shows as seqs never seen.
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        self.sock.bind(("127.0.0.1", a.listen))
        self.sock.settimeout(0.005)
        self.boot = int.from_bytes(os.urandom(8), "big") | 1
        self.counter = 0
        self.acked = 0
        self.acked_sent = 0
        self.seqs = set()
        self.datagrams = {k: 0 for k in KINDS.values()}
        self.records = 0
        self.other = 0
        self.checked = 0
        self.bad_tags = 0
        self.first_flows = None
        self.last_flows = None
        self.heartbeat_s = a.heartbeat_ms / 1000.0

    def send(self, kind, body):
        d = MAGIC + bytes([VERSION, kind, SINK_INDEX]) + struct.pack(">Q", self.boot) + body
        self.sock.sendto(d + hmac.new(self.key, d, hashlib.sha256).digest(), self.peer)

    def heartbeat(self):
        self.counter += 1
        # counter, role, priority, acked, in_sync: a standby with a full copy (it asks
        # for no bulk copy).
        self.send(HEARTBEAT, struct.pack(">QBBQB", self.counter, ROLE_STANDBY, SINK_PRIORITY,
                                         self.acked, 1))

    def ack(self):
        self.send(ACK, struct.pack(">QBQ", self.acked, 0, 0))
        self.acked_sent = self.acked

    def receive(self, d):
        if len(d) < HEADER_LEN + TAG_LEN or d[:4] != MAGIC or d[4] != VERSION \
                or d[6] != NODE_INDEX:
            self.other += 1
            return
        n = sum(self.datagrams.values())
        if n < 64 or n % 64 == 0:
            self.checked += 1
            tag = hmac.new(self.key, d[:-TAG_LEN], hashlib.sha256).digest()
            if not hmac.compare_digest(tag, d[-TAG_LEN:]):
                self.bad_tags += 1
                return
        kind = KINDS.get(d[5])
        if kind is None:
            self.other += 1
            return
        self.datagrams[kind] += 1
        if d[5] == FLOWS:
            seq, count = struct.unpack_from(">QH", d, HEADER_LEN)
            self.seqs.add(seq)
            self.records += count
            self.acked = max(self.acked, seq)
            now = time.time()
            self.first_flows = self.first_flows or now
            self.last_flows = now

    def run(self, stop):
        next_hb = next_ack = 0.0
        while not stop():
            try:
                d, _ = self.sock.recvfrom(2048)
                self.receive(d)
            except socket.timeout:
                pass
            except OSError:
                pass
            now = time.time()
            try:
                if now >= next_hb:
                    next_hb = now + self.heartbeat_s
                    self.heartbeat()
                if now >= next_ack and self.acked != self.acked_sent:
                    next_ack = now + 0.01
                    self.ack()
            except OSError:
                pass  # privlinkd's socket is not there yet (or any more)

    def summary(self):
        top = max(self.seqs) if self.seqs else 0
        return {
            "datagrams": self.datagrams,
            "records": self.records,
            "distinct_seqs": len(self.seqs),
            "highest_seq": top,
            # Seqs the node numbered that never reached the sink (lost in its socket
            # buffer): the node resends what is not acknowledged, the sink acknowledges
            # the highest it saw, so these count what a sink this slow missed.
            "seqs_missed": max(0, top - len(self.seqs)) if self.seqs else 0,
            "tags_checked": self.checked,
            "bad_tags": self.bad_tags,
            "other": self.other,
            "flows_seconds": (self.last_flows - self.first_flows)
            if self.first_flows and self.last_flows else None,
        }


def cmd_sink(a):
    sink = Sink(a)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.append(1))
    sink.run(lambda: bool(stopping))
    with open(a.out + ".tmp", "w") as f:
        json.dump(sink.summary(), f)
    os.replace(a.out + ".tmp", a.out)


def cmd_report(a):
    def jsonl(name):
        return harness.raw_records(a.out, name)
    med = harness.med_range
    fwd = jsonl("forward.jsonl")
    setups = jsonl("setup.jsonl")
    synced = [r for r in fwd if r.get("mode") == MODE]
    synced_setup = [r for r in setups if r.get("mode") == MODE]
    if not synced and not synced_setup:
        return
    rows = []
    for proto, n in sorted({(r["proto"], r["flows"]) for r in synced}):
        by_run = {}
        for r in fwd:
            if r["proto"] == proto and r["flows"] == n:
                by_run.setdefault(r["run"], {})[r["mode"]] = r
        runs = [by_run[k] for k in sorted(by_run)]

        def mpps(run, mode):
            return (run.get(mode) or {}).get("mpps")
        rows.append({
            "proto": proto, "flows": n,
            "privlink": med([mpps(r, "privlink") for r in runs]),
            MODE: med([mpps(r, MODE) for r in runs]),
            "ratio": med([mpps(r, MODE) / mpps(r, "privlink") for r in runs
                          if mpps(r, MODE) and mpps(r, "privlink")]),
            "records": med([(r.get(MODE) or {}).get("sink", {}).get("records") for r in runs]),
            "sync_dropped": max([(r.get(MODE) or {}).get("sync_dropped") or 0 for r in runs]),
        })
    setup = None
    if synced_setup:
        by_run = {}
        for r in setups:
            by_run.setdefault(r["run"], {})[r.get("mode", "privlink")] = r
        runs = [by_run[k] for k in sorted(by_run)]

        def rate(run, mode):
            r = run.get(mode) or {}
            return r.get("rate") if r.get("ok") else None
        setup = {
            "privlink": med([rate(r, "privlink") for r in runs]),
            MODE: med([rate(r, MODE) for r in runs]),
            "ratio": med([rate(r, MODE) / rate(r, "privlink") for r in runs
                          if rate(r, MODE) and rate(r, "privlink")]),
            "new_flows": med([(r.get(MODE) or {}).get("new_flows") for r in runs]),
            "expect": synced_setup[0].get("expect"),
            "records": med([(r.get(MODE) or {}).get("sink", {}).get("records") for r in runs]),
            "records_sent": med([(r.get(MODE) or {}).get("records_sent") for r in runs]),
            "seqs_missed": med([(r.get(MODE) or {}).get("sink", {}).get("seqs_missed")
                                for r in runs]),
            "sync_dropped": max([(r.get(MODE) or {}).get("sync_dropped") or 0 for r in runs]),
            "bad_tags": sum((r.get(MODE) or {}).get("sink", {}).get("bad_tags") or 0
                            for r in runs),
        }

    rp = os.path.join(a.out, "results.json")
    if os.path.exists(rp):
        with open(rp) as f:
            results = json.load(f)
        results["sync"] = {"forwarding": rows, "setup": setup}
        with open(rp + ".tmp", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(rp + ".tmp", rp)

    f = harness.fmt
    lines = ["", "HA flow sync (--sync): privlinkd the active node of a pair whose standby "
             "is a sink on the same machine (scripts/bench/sync.py), against the plain run "
             "of the same round; median [min–max] of the rounds.", "",
             "| measurement | without | with sync | with / without | records synced | "
             "sync_dropped |", "|" + "---|" * 6]
    for r in rows:
        lines.append(f"| forward {r['proto']} {r['flows']:,} flows, Mpps | {f(r['privlink'])} | "
                     f"{f(r[MODE])} | {f(r['ratio'], digits=3)} | {f(r['records'], digits=0)} | "
                     f"{r['sync_dropped']} |")
    if setup:
        lines.append(f"| setup, M new flows/s | {f(setup['privlink'], scale=1e-6)} | "
                     f"{f(setup[MODE], scale=1e-6)} | {f(setup['ratio'], digits=3)} | "
                     f"{f(setup['records'], digits=0)} | {setup['sync_dropped']} |")
        lines.append(f"\n- setup with sync: {f(setup['new_flows'], digits=0)} of "
                     f"{setup['expect']:,} SYNs made flows (the first arrive before the "
                     f"node turns active on the sink's first heartbeat and are dropped "
                     f"as standby); records sent by the node "
                     f"{f(setup['records_sent'], digits=0)}, received by the sink "
                     f"{f(setup['records'], digits=0)}; seqs the sink missed "
                     f"{f(setup['seqs_missed'], digits=0)}; bad tags {setup['bad_tags']}")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(a.out, "results.md"), "a") as fh:
        fh.write(text)
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("config")
    s.add_argument("config")
    s.add_argument("--key", required=True)
    s.add_argument("--node-port", type=int, required=True)
    s.add_argument("--sink-port", type=int, required=True)
    s.add_argument("--heartbeat-ms", type=int, default=100)
    s = sub.add_parser("sink")
    s.add_argument("--listen", type=int, required=True)
    s.add_argument("--peer", type=int, required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--heartbeat-ms", type=int, default=20)
    s = sub.add_parser("report")
    s.add_argument("out")
    a = p.parse_args()
    {"config": cmd_config, "sink": cmd_sink, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    main()
