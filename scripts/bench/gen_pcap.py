#!/usr/bin/env python3
"""Capture generator for the privlink benchmark (scripts/bench.sh).

Writes a classic pcap (microsecond timestamps, LINKTYPE_ETHERNET) of 60-byte Ethernet
frames (64 bytes on the wire with the FCS) from N distinct client flows to one endpoint
ip:port, in a random (seeded) order. No scapy: struct and precomputed checksum parts.

Kinds:
  udp   one UDP datagram (18 payload bytes) per flow            -> N packets
  tcp   every flow's SYN first, then one ACK segment per flow     -> 2N packets
        (the ACKs hit flows the SYNs created; each replay pass repeats both, so in
        steady state half of the lookups are SYN retransmissions of known flows)
  syn   one SYN per flow, for the setup-rate measurement          -> N packets
  udpfrag one UDP datagram (24 payload bytes) per flow, as two fragments: the first
        carries the UDP header and 16 bytes (MF), the second the last 8 bytes at offset
        24; the pair adjacent, the datagram's identification the flow's index (16 bits)
                                                                  -> 2N packets
  udp6  the udp kind's datagram (18 payload bytes) in IPv6, from IPv6 clients to the
        endpoint's IPv6 address (--endpoint6): 80-byte frames     -> N packets

Client addresses: flow i gets source address 10.1.1.0 + i // 64000 (so 10.1.1.0 upward,
inside the consumer attachment 10.1.0.0/16, clear of the endpoint and the appliance) and
source port 1024 + i % 64000: distinct 5-tuples for up to 16M flows. IPv6 clients (udp6)
are fd00:c1::1:0:0 + i // 64000, with the same ports.

Every IPv4 header checksum is valid, and so are the UDP and TCP checksums (RFC 768/793
pseudo-header), so the appliance's checksum checks and testpmd's 5tswap see real traffic.
"""

import argparse
import ipaddress
import os
import random
import struct
import sys

FRAME_LEN = 60  # without FCS; 64 bytes on the wire
PORTS_PER_IP = 64000
CLIENT_BASE = int(ipaddress.IPv4Address("10.1.1.0"))
CLIENT6_BASE = int(ipaddress.IPv6Address("fd00:c1::1:0:0"))


def mac_bytes(s):
    parts = s.split(":")
    if len(parts) != 6:
        raise argparse.ArgumentTypeError(f"not a MAC address: {s}")
    return bytes(int(p, 16) for p in parts)


def fold(s):
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b):
    """Sum of the big-endian 16-bit words of b (even length)."""
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


class Template:
    """One frame kind with the flow-independent parts of its checksums precomputed."""

    def __init__(self, kind, dst_mac, src_mac, dst_ip, dst_port):
        self.kind = kind
        proto = 17 if kind == "udp" else 6
        l4_len = 8 + 18 if kind == "udp" else 20
        self.total_len = 20 + l4_len
        self.proto = proto
        self.eth = dst_mac + src_mac + b"\x08\x00"
        self.dst_ip = dst_ip
        self.dst_port = dst_port
        # IPv4 header without the source address and checksum: version/IHL, TOS, total
        # length, id 0, DF, TTL 64, protocol, destination.
        self.ip_fixed = words(
            struct.pack("!BBHHHBBH4s", 0x45, 0, self.total_len, 0, 0x4000, 64, proto, 0,
                        dst_ip.to_bytes(4, "big"))
        )
        # Pseudo-header without the source address: destination, protocol, L4 length.
        self.pseudo_fixed = words(dst_ip.to_bytes(4, "big")) + proto + l4_len
        self.l4_len = l4_len
        self.payload = b"privlink-bench-pkt"[:18] if kind == "udp" else b""

    def frame(self, src_ip, sport, flags=0x02, seq=0, ack=0):
        src = src_ip.to_bytes(4, "big")
        src_words = (src_ip >> 16) + (src_ip & 0xFFFF)
        ip_csum = 0xFFFF - fold(self.ip_fixed + src_words)
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, self.total_len, 0, 0x4000, 64, self.proto,
                         ip_csum, src, self.dst_ip.to_bytes(4, "big"))
        if self.kind == "udp":
            l4 = struct.pack("!HHHH", sport, self.dst_port, self.l4_len, 0) + self.payload
        else:
            l4 = struct.pack("!HHIIBBHHH", sport, self.dst_port, seq, ack, 5 << 4, flags,
                             64240, 0, 0)
        c = 0xFFFF - fold(self.pseudo_fixed + src_words + words(l4))
        if self.kind == "udp" and c == 0:
            c = 0xFFFF  # 0 means "no checksum" for UDP
        l4 = l4[:6] + struct.pack("!H", c) + l4[8:] if self.kind == "udp" else \
            l4[:16] + struct.pack("!H", c) + l4[18:]
        f = self.eth + ip + l4
        return f + b"\x00" * (FRAME_LEN - len(f))


def fragments(t, src_ip, sport, ident):
    """The two fragments of flow's UDP datagram of 24 payload bytes (see the docs)."""
    src = src_ip.to_bytes(4, "big")
    dst = t.dst_ip.to_bytes(4, "big")
    data = b"privlink-bench-fragment"[:24].ljust(24, b"!")
    seg = struct.pack("!HHHH", sport, t.dst_port, 8 + len(data), 0) + data
    pseudo = words(src) + words(dst) + 17 + len(seg)
    c = 0xFFFF - fold(pseudo + words(seg)) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    out = []
    for at, piece, flags in ((0, seg[:24], 0x2000), (24, seg[24:], 0)):
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(piece), ident, flags | at // 8,
                          64, 17, 0, src, dst)
        ip_csum = 0xFFFF - fold(words(hdr))
        hdr = hdr[:10] + struct.pack("!H", ip_csum) + hdr[12:]
        f = t.eth + hdr + piece
        out.append(f + b"\x00" * (FRAME_LEN - len(f)))
    return out


def udp6_frame(t, src, sport, dst):
    """The udp kind's datagram from IPv6 client `src` to endpoint `dst` (ints)."""
    payload = b"privlink-bench-pkt"[:18]
    l4_len = 8 + len(payload)
    s, d = src.to_bytes(16, "big"), dst.to_bytes(16, "big")
    seg = struct.pack("!HHHH", sport, t.dst_port, l4_len, 0) + payload
    c = 0xFFFF - fold(words(s) + words(d) + 17 + l4_len + words(seg)) or 0xFFFF
    seg = seg[:6] + struct.pack("!H", c) + seg[8:]
    ip = struct.pack("!IHBB16s16s", 6 << 28, l4_len, 17, 64, s, d)
    return t.eth[:12] + b"\x86\xdd" + ip + seg


def client(i):
    return CLIENT_BASE + i // PORTS_PER_IP, 1024 + i % PORTS_PER_IP


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flows", type=int, required=True)
    ap.add_argument("--kind", choices=["udp", "tcp", "syn", "udpfrag", "udp6"], default="udp")
    ap.add_argument("--out", required=True)
    ap.add_argument("--dst-mac", type=mac_bytes, default=mac_bytes("02:70:63:61:70:00"),
                    help="the appliance port's MAC (net_pcap's first port: 02:70:63:61:70:00)")
    ap.add_argument("--src-mac", type=mac_bytes, default=mac_bytes("02:00:00:00:01:10"))
    ap.add_argument("--endpoint", default="10.1.0.100")
    ap.add_argument("--endpoint6", default="fd00:c1::64")
    ap.add_argument("--port", type=int, default=None,
                    help="endpoint port (default 9000 for udp, 80 for tcp/syn)")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if not 1 <= a.flows <= 250 * PORTS_PER_IP:
        sys.exit(f"gen_pcap: --flows must be 1..{250 * PORTS_PER_IP}")
    udp = a.kind in ("udp", "udpfrag", "udp6")
    port = a.port if a.port is not None else (9000 if udp else 80)
    endpoint6 = int(ipaddress.IPv6Address(a.endpoint6))
    t = Template("udp" if udp else "tcp", a.dst_mac, a.src_mac,
                 int(ipaddress.IPv4Address(a.endpoint)), port)

    rng = random.Random(a.seed)
    order = list(range(a.flows))
    rng.shuffle(order)
    passes = [(order, 0x02)]  # SYN (or UDP)
    if a.kind == "tcp":
        acks = list(order)
        rng.shuffle(acks)
        passes.append((acks, 0x10))  # ACK

    tmp = a.out + ".tmp"
    rec_hdr = struct.Struct("<IIII")
    with open(tmp, "wb") as f:
        # Classic pcap global header: magic, v2.4, tz 0, sigfigs 0, snaplen, Ethernet.
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        n = 0
        buf = bytearray()
        for flows, flags in passes:
            for i in flows:
                ip, sport = client(i)
                seq = (i * 2654435761) & 0xFFFFFFFF
                if a.kind == "udpfrag":
                    frames = fragments(t, ip, sport, i & 0xFFFF)
                elif a.kind == "udp6":
                    frames = [udp6_frame(t, CLIENT6_BASE + i // PORTS_PER_IP, sport, endpoint6)]
                else:
                    frames = [t.frame(ip, sport, flags, seq if flags == 0x02 else seq + 1,
                                      1 if flags == 0x10 else 0)]
                for fr in frames:
                    buf += rec_hdr.pack(n // 1_000_000, n % 1_000_000, len(fr), len(fr))
                    buf += fr
                    n += 1
                if len(buf) >= 1 << 22:
                    f.write(buf)
                    buf.clear()
        f.write(buf)
    os.replace(tmp, a.out)
    print(f"gen_pcap: {n} packets ({a.kind}, {a.flows} flows) -> {a.out}")


if __name__ == "__main__":
    main()
