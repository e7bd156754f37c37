#!/usr/bin/env python3
"""Clients for privlink's end-to-end tests. Every mode is bounded in count and time and
prints one JSON object on stdout (connect-then-get: two, one line each).

  http-many HOST PORT N [SRC_IP]  N GETs, each on a new connection (from SRC_IP if given)
  udp HOST PORT N                 N datagrams, one reply each
  keepalive HOST PORT SECONDS     one HTTP/1.1 connection, a GET every 100 ms for SECONDS
  idle-then-send HOST PORT IDLE   a GET, IDLE seconds of silence, a GET on the same connection
  hold HOST PORT N SECONDS UDP_PORT   N keep-alive connections, each a GET every 100 ms for
                                  SECONDS, and one UDP stream to UDP_PORT (a datagram every
                                  100 ms, each echoed): failures, resets and the longest
                                  silence between two answers (at most SECONDS + 10 s)
  connect-then-get HOST PORT DELAY   a connection; one line {"connected": ...} as soon as
                                  its handshake is done, then after DELAY seconds a GET on
                                  it and a second line with what came back (two lines: the
                                  caller acts between them)
  raw IFACE DST_MAC SRC_MAC SRC_IP DST_IP   send the malformed-frame suite with a raw socket
  frag-needed HOST PORT MTU       a UDP exchange, then an ICMP fragmentation-needed (next-hop
                                  MTU MTU) about the reply, sent back to HOST as a router would
  spoof IFACE DST_MAC SRC_MAC SRC_IP DST_IP PORT   UDP datagrams and TCP SYNs to DST_IP:PORT
                                  from martian and our-own sources, and UDP from SRC_IP with
                                  bad, source-route and harmless IPv4 options
  flood IFACE DST_MAC SRC_MAC SOURCES DST_IP DPORT syn|udp PPS SECONDS
                                  raw SYNs or UDP datagrams from SOURCES (A.B.C.D or
                                  A.B.C.D-E), each from a fresh source port, PPS a second
                                  for SECONDS (at most PPS*SECONDS frames, SECONDS+5 s)
  udp-big HOST PORT N SIZE        N datagrams of SIZE bytes (the kernel fragments them), each
                                  echoed whole: replies that end with what was sent
  frag-raw IFACE DST_MAC SRC_MAC SRC_IP DST_IP PORT reversed|overlap|death
                                  one 3000-byte UDP datagram from SRC_IP:41000 (IPv4, or
                                  IPv6 with fragment headers) as fragments
                                  of 1024 bytes written with a raw socket: last first
                                  (reversed), with a copy of the second moved 8 bytes back
                                  into the first (overlap), or with a last fragment ending
                                  past 65,535 bytes (death); waits 2 s for the echo
  bulk HOST PORT BYTES             a GET of BYTES bytes (/bytes/BYTES) and a POST of as many,
                                  each on its own connection within 30 s: whether each
                                  arrived whole and unaltered (sha256 on both ends)
  udp-bursts HOST PORT ROUNDS BIG SMALL [nodf]   ROUNDS times: one BIG-byte datagram (0:
                                  none), then SMALL small ones back to back; counts the
                                  small replies (nodf: the big ones without DF)
"""
import errno
import hashlib
import http.client
import json
import selectors
import socket
import struct
import sys
import time


def out(obj):
    print(json.dumps(obj), flush=True)


def http_many(host, port, n, src=None):
    ok, fail, bodies = 0, 0, []
    source = (src, 0) if src else None
    for _ in range(n):
        try:
            c = http.client.HTTPConnection(host, port, timeout=3, source_address=source)
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


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def udp(host, port, n):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
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


def udp_big(host, port, n, size):
    s = socket.socket(family(host), socket.SOCK_DGRAM)
    # Fragmented by this host's kernel (no DF), whatever the path MTU is thought to be.
    # (IPv6 has no DF: its sender always fragments to the path MTU.)
    if family(host) == socket.AF_INET:
        s.setsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10),
                     getattr(socket, "IP_PMTUDISC_DONT", 0))
    s.settimeout(2)
    ok, lengths = 0, []
    for i in range(n):
        msg = (f"big-{i}-".encode() + bytes(range(256)) * (size // 256 + 1))[:size]
        try:
            s.sendto(msg, (host, port))
            data, _ = s.recvfrom(65535)
            lengths.append(len(data))
            if data.endswith(b" data=" + msg):
                ok += 1
        except OSError as e:
            lengths.append(f"error {e}")
    out({"ok": ok, "fail": n - ok, "lengths": lengths})


def udp_seg6(src, dst, sport, dport, data):
    """A UDP header and data with the IPv6 pseudo-header checksum."""
    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    length = 8 + len(data)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = csum(s + d + struct.pack("!IxxxB", length, 17) + hdr + data) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + data


def frag_raw(iface, dst_mac, src_mac, src_ip, dst_ip, port, mode):
    sport = 41000
    v6 = ":" in src_ip
    r = socket.socket(family(src_ip), socket.SOCK_DGRAM)
    r.bind((src_ip, sport))
    r.settimeout(2)
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) \
        + (b"\x86\xdd" if v6 else b"\x08\x00")
    data = (b"frag-raw-" + bytes(range(256)) * 12)[:3000]
    seg = (udp_seg6 if v6 else udp_seg)(src_ip, dst_ip, sport, port, data)
    ident = 0x4242
    frags = []
    for at in range(0, len(seg), 1024):
        piece = seg[at:at + 1024]
        more = at + 1024 < len(seg)
        frags.append((at, piece, more))

    def frame(at, piece, more):
        if v6:
            # A fragment header (RFC 8200 §4.5) straight after the fixed header.
            fh = struct.pack("!BBHI", 17, 0, (at & 0xFFF8) | int(more), ident)
            ip = struct.pack("!IHBB", 6 << 28, len(fh) + len(piece), 44, 64) \
                + socket.inet_pton(socket.AF_INET6, src_ip) \
                + socket.inet_pton(socket.AF_INET6, dst_ip)
            return eth + ip + fh + piece
        flags = (0x2000 if more else 0) | (at // 8)
        return eth + ipv4_id(src_ip, dst_ip, 17, piece, ident, flags)

    if mode == "reversed":
        order = [frame(*f) for f in reversed(frags)]
    elif mode == "overlap":
        at, piece, more = frags[1]
        order = [frame(*frags[0]), frame(at - 8, seg[at - 8:at - 8 + len(piece)], more)] \
            + [frame(*f) for f in frags[1:]]
    elif mode == "death":
        order = [frame(*frags[0]), frame(65528, b"x" * 64, False)] \
            + [frame(*f) for f in frags[1:]]
    else:
        raise SystemExit(f"frag-raw: unknown mode {mode}")
    for f in order:
        s.send(f)
        time.sleep(0.01)
    try:
        reply, _ = r.recvfrom(65535)
        out({"sent": len(order), "reply_len": len(reply),
             "whole": reply.endswith(b" data=" + data)})
    except socket.timeout:
        out({"sent": len(order), "reply_len": 0, "whole": False})


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


class HeldConnection:
    """One keep-alive connection of `hold`: a GET every 100 ms, answers parsed by length."""

    def __init__(self, sock, request, now):
        self.sock = sock
        self.request = request
        self.buf = b""
        self.waiting = False   # a request is out and its answer not complete
        self.next_send = now
        self.last_ok = now     # the connection's open counts as its first answer
        self.max_gap = 0.0
        self.max_gap_at = 0.0
        self.ok = 0
        self.dead = None       # why it failed, once it did

    def answer_length(self):
        """Length of the first complete answer in buf, or None."""
        head_end = self.buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        length = 0
        for line in self.buf[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip() or 0)
        total = head_end + 4 + length
        return total if len(self.buf) >= total else None


def hold(host, port, n, seconds, udp_port):
    """N connections each asking every 100 ms, and a UDP stream beside them, for SECONDS.

    A connection fails when it cannot be opened, is reset or closed, or still waits for
    an answer at the end (after a grace of 3 s); the longest gap is the longest time
    between two answers on one connection (from its open for the first), which is what a
    failover costs a connection that survives it. Everything is bounded: at most 4 s of
    opening, SECONDS of traffic, 3 s of grace.
    """
    t0 = time.time()
    request = f"GET /keepalive HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns, errors = [], []
    failed, reset, bad_answers = 0, 0, 0

    def fail(c, why, is_reset):
        nonlocal failed, reset
        if c.dead is None:
            c.dead = why
            failed += 1
            reset += 1 if is_reset else 0
            if len(errors) < 5:
                errors.append(why)
            try:
                sel.unregister(c.sock)
            except (KeyError, ValueError):
                pass
            c.sock.close()

    for _ in range(n):
        if time.time() - t0 > 4:
            failed += 1
            if len(errors) < 5:
                errors.append("not opened: opening took over 4 s")
            continue
        try:
            s = socket.create_connection((host, port), timeout=3)
        except OSError as e:
            failed += 1
            if len(errors) < 5:
                errors.append(f"connect: {e}")
            continue
        s.setblocking(False)
        c = HeldConnection(s, request, time.time())
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)

    u = socket.socket(family(host), socket.SOCK_DGRAM)
    u.setblocking(False)
    udp_sent, udp_got, udp_seen = 0, 0, set()
    udp_next = time.time()
    udp_last = time.time()
    udp_max_gap = 0.0
    udp_errors = []

    start = time.time()
    end = start + seconds
    hard_end = end + 3
    while True:
        now = time.time()
        sending = now < end
        if not sending and (now >= hard_end or not any(c.waiting and c.dead is None for c in conns)):
            break
        if sending:
            for c in conns:
                if c.dead is None and not c.waiting and now >= c.next_send:
                    try:
                        c.sock.send(c.request)
                        c.waiting = True
                        c.next_send = now + 0.1
                    except BlockingIOError:
                        pass
                    except OSError as e:
                        fail(c, f"send: {e}", e.errno in (errno.ECONNRESET, errno.EPIPE))
            if now >= udp_next:
                try:
                    u.sendto(f"hold-{udp_sent}".encode(), (host, udp_port))
                    udp_sent += 1
                except OSError as e:
                    if len(udp_errors) < 3:
                        udp_errors.append(str(e))
                udp_next = now + 0.1
        try:
            while True:
                data, _ = u.recvfrom(65535)
                mark = data.rfind(b"hold-")
                if mark >= 0 and data[mark:] not in udp_seen:
                    udp_seen.add(data[mark:])
                    udp_got += 1
                    t = time.time()
                    if t - udp_last > udp_max_gap:
                        udp_max_gap = t - udp_last
                    udp_last = t
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as e:  # an ICMP error queued on the socket
            if len(udp_errors) < 3:
                udp_errors.append(str(e))
        for key, _ in sel.select(timeout=0.01):
            c = key.data
            try:
                chunk = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                fail(c, f"recv: {e}", e.errno == errno.ECONNRESET)
                continue
            if not chunk:
                fail(c, "closed by the other end", False)
                continue
            c.buf += chunk
            while True:
                total = c.answer_length()
                if total is None:
                    break
                answer, c.buf = c.buf[:total], c.buf[total:]
                t = time.time()
                if answer.startswith(b"HTTP/1.1 200"):
                    c.ok += 1
                    if t - c.last_ok > c.max_gap:
                        c.max_gap, c.max_gap_at = t - c.last_ok, max(0.0, c.last_ok - start)
                    c.last_ok = t
                else:
                    bad_answers += 1
                c.waiting = False
    for c in conns:
        if c.dead is None and c.waiting:
            fail(c, f"no answer for {time.time() - c.last_ok:.1f} s at the end", False)
        elif c.dead is None:
            c.sock.close()
    worst = max(conns, key=lambda c: c.max_gap, default=None)
    out({
        "opened": len(conns),
        "failed": failed,
        "reset": reset,
        "errors": errors,
        "requests_ok": sum(c.ok for c in conns),
        "bad_answers": bad_answers,
        "max_gap": round(worst.max_gap, 3) if worst else None,
        "max_gap_at": round(worst.max_gap_at, 3) if worst else None,
        "udp_sent": udp_sent,
        "udp_received": udp_got,
        # A stream that went silent for good: its silence until the end counts too.
        "udp_max_gap": round(max(udp_max_gap, end - udp_last), 3),
        "udp_errors": udp_errors,
        "seconds": round(time.time() - t0, 2),
    })


def connect_then_get(host, port, delay):
    try:
        s = socket.create_connection((host, port), timeout=3)
    except OSError as e:
        out({"connected": False, "error": str(e)})
        out({"answer": "not-connected"})
        return
    out({"connected": True, "local": "%s:%d" % s.getsockname()})
    time.sleep(delay)
    s.settimeout(5)
    result, first = "no-answer", ""
    try:
        s.sendall(f"GET /aged HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        data = read_response(s).decode(errors="replace")
        first = data.split("\r\n")[0]
        result = "answered" if data.startswith("HTTP/1.1 200") else ("closed" if not data else "bad-answer")
    except ConnectionResetError:
        result = "reset"
    except socket.timeout:
        result = "timeout"
    except OSError as e:
        result = f"error {e}"
    out({"answer": result, "status": first})


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


def ipv4_id(src, dst, proto, payload, ident, flags, ttl=64):
    """An IPv4 header with identification IDENT and flags/fragment offset FLAGS."""
    h = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, flags, ttl, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload


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


def frag_needed(host, port, mtu):
    """Path-MTU discovery seen from the consumer's side: the reply came from HOST:PORT to
    our socket; an ICMP "fragmentation needed" about that reply (as a router between us
    and the endpoint would send) must reach the target, translated."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(b"hello", (host, port))
    data, _ = s.recvfrom(65535)
    me, my_port = s.getsockname()
    if me == "0.0.0.0":
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.connect((host, port))
        me = probe.getsockname()[0]
    # The reply as the endpoint sent it: its UDP header (checksum included) is what the
    # quote carries; the IP header's ident and TTL are a router's to see, not ours.
    reply = ipv4(host, me, 17, udp_seg(host, me, port, my_port, data))
    quote = reply[:28]
    body = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + quote
    icmp = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    r = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    r.sendto(icmp, (host, 0))
    out({"client": f"{me}:{my_port}", "reply": data.decode(errors="replace"), "sent": len(icmp)})


def spoof(iface, dst_mac, src_mac, src_ip, dst_ip, port):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    d = bytes.fromhex(dst_mac.replace(":", ""))
    m = bytes.fromhex(src_mac.replace(":", ""))
    eth = d + m + b"\x08\x00"
    net = src_ip.rsplit(".", 1)[0]  # the consumer's /24: its network, broadcast, our .1
    martians = ["0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "240.0.0.1",
                f"{net}.0", f"{net}.255", f"{net}.1", dst_ip]
    sent = {"martian_udp": 0, "martian_syn": 0, "bad_options": 0, "source_route": 0,
            "harmless_options": 0}

    def send(frame):
        if len(frame) < 60:
            frame = frame + b"\0" * (60 - len(frame))
        s.send(frame)
        time.sleep(0.01)

    for i, src in enumerate(martians):
        send(eth + ipv4(src, dst_ip, 17, udp_seg(src, dst_ip, 41000 + i, port, b"spoofed")))
        sent["martian_udp"] += 1
        syn = tcp_syn(src, dst_ip, 42000 + i, 80)
        send(eth + ipv4(src, dst_ip, 6, syn))
        sent["martian_syn"] += 1
    udp_ok = udp_seg(src_ip, dst_ip, 43000, port, b"options")
    for name, opts in [("bad_options", b"\x07\x00\x00\x00"),      # length 0
                       ("bad_options", b"\x44\xff\x00\x00"),      # length 255
                       ("source_route", b"\x83\x07\x04\x0a\x02\x00\x0b\x00"),  # LSRR
                       ("source_route", b"\x89\x07\x04\x0a\x02\x00\x0b\x00"),  # SSRR
                       ("harmless_options", b"\x94\x04\x00\x00")]:  # router alert
        ihl = 5 + len(opts) // 4
        send(eth + ipv4(src_ip, dst_ip, 17, udp_ok, ihl=ihl, options=opts))
        sent[name] += 1
    out(sent)


def tcp_syn(src, dst, sport, dport):
    seg = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(seg))
    c = csum(pseudo + seg)
    return seg[:16] + struct.pack("!H", c) + seg[18:]


def tcp_seg(src, dst, sport, dport, seq, flags):
    hdr = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, flags, 65535, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, len(hdr))
    c = csum(pseudo + hdr)
    return hdr[:16] + struct.pack("!H", c) + hdr[18:]


def addresses(spec):
    """A.B.C.D or A.B.C.D-E (last octet range)."""
    if "-" not in spec:
        return [spec]
    first, last = spec.split("-")
    a, b, c, d = first.split(".")
    return [f"{a}.{b}.{c}.{x}" for x in range(int(d), int(last) + 1)]


def flood(iface, dst_mac, src_mac, sources, dst_ip, dport, kind, pps, seconds):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    eth = bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00"
    ips = addresses(sources)
    total = int(pps * seconds)
    start = time.time()
    sent = 0
    for i in range(total):
        # Every frame a new 5-tuple: sources in turn, each with the next port of its own.
        src = ips[i % len(ips)]
        sport = 1024 + (i // len(ips)) % 64000
        if kind == "syn":
            seg = tcp_seg(src, dst_ip, sport, dport, (i * 2654435761) & 0xFFFFFFFF, 0x02)
            frame = eth + ipv4(src, dst_ip, 6, seg)
        else:
            frame = eth + ipv4(src, dst_ip, 17, udp_seg(src, dst_ip, sport, dport, b"spray"))
        if len(frame) < 60:
            frame += b"\0" * (60 - len(frame))
        try:
            s.send(frame)
            sent += 1
        except OSError:
            pass  # a full tap queue: the frame is lost, as on a wire
        now = time.time()
        if now - start > seconds + 5:
            break
        ahead = start + (i + 1) / pps - now
        if ahead > 0.002:
            time.sleep(ahead)
    out({"sent": sent, "sources": len(ips), "seconds": round(time.time() - start, 2)})


def pattern(n):
    """The bytes target_server.py sends and expects: the same function."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def bulk(host, port, n):
    data = pattern(n)
    res = {}
    for way in ("down", "up"):
        t0 = time.monotonic()
        try:
            c = http.client.HTTPConnection(host, port, timeout=30)
            if way == "down":
                c.request("GET", f"/bytes/{n}")
                body = c.getresponse().read()
                res[way] = len(body) == n and body == data
                res[way + "_len"] = len(body)
            else:
                c.request("POST", "/upload", body=data)
                answer = c.getresponse().read().decode()
                want = f"received={n} sha256={hashlib.sha256(data).hexdigest()}"
                res[way] = answer.strip() == want
                res[way + "_answer"] = answer.strip()
            c.close()
        except OSError as e:
            res[way] = False
            res[way + "_error"] = str(e)
        res[way + "_seconds"] = round(time.monotonic() - t0, 3)
    return res


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "http-many":
        http_many(args[0], int(args[1]), int(args[2]), args[3] if len(args) > 3 else None)
    elif mode == "udp":
        udp(args[0], int(args[1]), int(args[2]))
    elif mode == "keepalive":
        keepalive(args[0], int(args[1]), float(args[2]))
    elif mode == "hold":
        hold(args[0], int(args[1]), int(args[2]), float(args[3]), int(args[4]))
    elif mode == "connect-then-get":
        connect_then_get(args[0], int(args[1]), float(args[2]))
    elif mode == "idle-then-send":
        idle_then_send(args[0], int(args[1]), float(args[2]))
    elif mode == "raw":
        raw(*args[:5])
    elif mode == "frag-needed":
        frag_needed(args[0], int(args[1]), int(args[2]))
    elif mode == "spoof":
        spoof(*args[:5], int(args[5]))
    elif mode == "flood":
        flood(*args[:4], args[4], int(args[5]), args[6], float(args[7]), float(args[8]))
    elif mode == "udp-big":
        udp_big(args[0], int(args[1]), int(args[2]), int(args[3]))
    elif mode == "frag-raw":
        frag_raw(*args[:5], int(args[5]), args[6])
    elif mode == "bulk":
        out(bulk(args[0], int(args[1]), int(args[2])))
    elif mode == "udp-bursts":
        udp_bursts(args[0], int(args[1]), int(args[2]), int(args[3]), int(args[4]),
                   df=args[5:6] != ["nodf"])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
