#!/usr/bin/env python3
"""Clients for privlink's end-to-end tests. Every mode is bounded in count and time and
prints one JSON object on stdout.

  http-many HOST PORT N           N GETs, each on a new connection
  udp HOST PORT N                 N datagrams, one reply each
  keepalive HOST PORT SECONDS     one HTTP/1.1 connection, a GET every 100 ms for SECONDS
  idle-then-send HOST PORT IDLE   a GET, IDLE seconds of silence, a GET on the same connection
  raw IFACE DST_MAC SRC_MAC SRC_IP DST_IP   send the malformed-frame suite with a raw socket
  udp-bursts HOST PORT ROUNDS BIG SMALL [nodf]   ROUNDS times: one BIG-byte datagram (0:
                                  none), then SMALL small ones back to back; counts the
                                  small replies (nodf: the big ones without DF)
"""
import http.client
import json
import socket
import struct
import sys
import time


def out(obj):
    print(json.dumps(obj), flush=True)


def http_many(host, port, n):
    ok, fail, bodies = 0, 0, []
    for _ in range(n):
        try:
            c = http.client.HTTPConnection(host, port, timeout=3)
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read().decode()
            c.close()
            if r.status == 200:
                ok += 1
                bodies.append(body.strip())
            else:
                fail += 1
        except OSError as e:
            fail += 1
            bodies.append(f"error {e}")
    out({"ok": ok, "fail": fail, "bodies": bodies})


def udp(host, port, n):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    ok, replies = 0, []
    for i in range(n):
        msg = f"ping-{i}".encode()
        try:
            s.sendto(msg, (host, port))
            data, _ = s.recvfrom(65535)
            if data.endswith(msg):
                ok += 1
            replies.append(data.decode(errors="replace"))
        except OSError as e:
            replies.append(f"error {e}")
    out({"ok": ok, "fail": n - ok, "replies": replies})


def udp_bursts(host, port, rounds, big, small, df=True):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Path-MTU discovery as usual (DF set) unless asked; the interface MTU decides what
    # leaves the host whole.
    if not df:
        # Linux's IP_MTU_DISCOVER (10) = IP_PMTUDISC_DONT (0); not every Python names them.
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10),
                     getattr(socket, "IP_PMTUDISC_DONT", 0))
    s.settimeout(0.5)
    got, big_replies, sent = set(), 0, 0
    for r in range(rounds):
        if big:
            s.sendto(b"B" * big, (host, port))
        for i in range(small):
            s.sendto(f"small-{r}-{i}".encode(), (host, port))
            sent += 1
        end = time.time() + 0.3
        while time.time() < end:
            try:
                data, _ = s.recvfrom(65535)
            except socket.timeout:
                break
            except OSError:
                break
            if b"small-" in data:
                got.add(data[data.index(b"small-"):].decode(errors="replace"))
            elif data.endswith(b"B" * 16):
                big_replies += 1
        time.sleep(0.05)
    out({"small_sent": sent, "small_ok": len(got), "big_replies": big_replies})


def keepalive(host, port, seconds):
    c = http.client.HTTPConnection(host, port, timeout=3)
    c.connect()
    local = c.sock.getsockname()
    ok, fail, targets, errors = 0, 0, [], []
    end = time.time() + seconds
    while time.time() < end:
        try:
            c.request("GET", "/keepalive")
            r = c.getresponse()
            body = r.read().decode()
            if r.status == 200:
                ok += 1
                targets.append(body.split()[0])
            else:
                fail += 1
            if c.sock is None or c.sock.getsockname() != local:
                errors.append("reconnected")
                break
        except OSError as e:
            fail += 1
            errors.append(str(e))
            break
        time.sleep(0.1)
    out({"ok": ok, "fail": fail, "targets": sorted(set(targets)), "errors": errors})


def read_response(s):
    """One whole HTTP response (headers and Content-Length body) from socket s."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            return buf
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def idle_then_send(host, port, idle):
    s = socket.create_connection((host, port), timeout=3)
    req = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    s.sendall(req)
    first = read_response(s).decode(errors="replace")
    time.sleep(idle)
    result = "no-answer"
    try:
        s.sendall(req)
        data = s.recv(4096)
        result = "answered" if data else "closed"
    except ConnectionResetError:
        result = "reset"
    except socket.timeout:
        result = "timeout"
    except OSError as e:
        result = f"error {e}"
    out({"first": first.split("\r\n")[0], "second": result})


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b)//2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4(src, dst, proto, payload, ttl=64, ihl=5, total=None, frag=0, good_csum=True, options=b""):
    total = total if total is not None else 4 * ihl + len(payload)
    h = struct.pack("!BBHHHBBH4s4s", (4 << 4) | ihl, 0, total, 0x1234, frag, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + options
    c = csum(h[:20 + len(options)])
    if not good_csum:
        c ^= 0x5555
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def udp_seg(src, dst, sport, dport, data):
    length = 8 + len(data)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 17, length)
    seg = struct.pack("!HHHH", sport, dport, length, 0) + data
    c = csum(pseudo + seg) or 0xFFFF
    return seg[:6] + struct.pack("!H", c) + seg[8:]


def raw(iface, dst_mac, src_mac, src_ip, dst_ip):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    d = bytes.fromhex(dst_mac.replace(":", ""))
    m = bytes.fromhex(src_mac.replace(":", ""))
    eth = d + m + b"\x08\x00"
    good_udp = udp_seg(src_ip, dst_ip, 40000, 9000, b"hello")
    frames = {
        "truncated_ipv4": eth + ipv4(src_ip, dst_ip, 17, good_udp)[:15],
        "bad_ihl": eth + ipv4(src_ip, dst_ip, 17, good_udp, ihl=3),
        "bad_total_length": eth + ipv4(src_ip, dst_ip, 17, good_udp, total=1400),
        "bad_checksum": eth + ipv4(src_ip, dst_ip, 17, good_udp, good_csum=False),
        "fragment": eth + ipv4(src_ip, dst_ip, 17, good_udp, frag=0x2000),
        "ttl_1": eth + ipv4(src_ip, dst_ip, 17, good_udp, ttl=1),
        "garbage_ethertype": d + m + b"\x88\xb6" + b"\xde\xad\xbe\xef" * 12,
    }
    for name, f in frames.items():
        # Pad to the Ethernet minimum like a NIC would, except the frame that must stay
        # shorter than an IPv4 header.
        if len(f) < 60 and name != "truncated_ipv4":
            f = f + b"\0" * (60 - len(f))
        s.send(f)
        time.sleep(0.02)
    out({"sent": sorted(frames)})


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "http-many":
        http_many(args[0], int(args[1]), int(args[2]))
    elif mode == "udp":
        udp(args[0], int(args[1]), int(args[2]))
    elif mode == "keepalive":
        keepalive(args[0], int(args[1]), float(args[2]))
    elif mode == "idle-then-send":
        idle_then_send(args[0], int(args[1]), float(args[2]))
    elif mode == "raw":
        raw(*args[:5])
    elif mode == "udp-bursts":
        udp_bursts(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]),
                   df=args[5:6] != ["nodf"])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
