#!/usr/bin/env python3
"""A provider target for privlink's demo and end-to-end tests.

Serves, bound to one address:
  * HTTP on TCP PORT (default 8080): every GET answers
        target=<NAME> client=<ip>:<port> path=<path>
    so the caller sees which target answered and which client address the target saw
    (with privlink in between: the SNAT address, never the consumer). HTTP/1.1 keep-alive
    is supported, so one connection can carry many requests.
  * UDP echo on UDP_PORT (default 9000): answers  target=<NAME> client=<ip>:<port> data=<data>

GET /status/NNN answers status NNN, and GET /health the status written in the file given
with --health (200 while there is none): health checks in tests. GET /bytes/N answers N
bytes of a fixed pattern (pattern(N) below), POST answers "received=N sha256=HEX" of the
body it read: bulk transfers both ways.

With --bind6, the same on an IPv6 address too (a NAT66 target).

Each request is logged as one line "tcp|udp <client ip>:<port>" to LOG (if given), which
tests read to check what the target saw. Runs until killed.
"""
import argparse
import hashlib
import http.server
import socket
import socketserver
import sys
import threading


def pattern(n):
    """N bytes that a bulk transfer's two ends agree on (client.py has the same)."""
    block = bytes(range(251))
    return (block * (n // 251 + 1))[:n]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bind", required=True)
    ap.add_argument("--bind6", help="an IPv6 address to serve on as well")
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--udp-port", type=int, default=9000)
    ap.add_argument("--log")
    ap.add_argument("--health", help="file holding the status /health answers (default 200)")
    a = ap.parse_args()
    log_lock = threading.Lock()

    def log(kind, addr):
        if not a.log:
            return
        with log_lock, open(a.log, "a") as f:
            f.write(f"{kind} {addr[0]}:{addr[1]}\n")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            # Health-check paths: /status/NNN answers NNN; /health answers the code in
            # the file HEALTH (if given and present), else 200. Not logged: the tests
            # count the consumers' requests.
            if self.path.startswith("/status/") or self.path == "/health":
                code = 200
                if self.path.startswith("/status/"):
                    code = int(self.path[len("/status/"):] or 200)
                elif a.health:
                    try:
                        with open(a.health) as f:
                            code = int(f.read().strip() or 200)
                    except OSError:
                        pass
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            log("tcp", self.client_address)
            if self.path.startswith("/bytes/"):
                n = min(int(self.path[len("/bytes/"):] or 0), 64 << 20)
                self.send_response(200)
                self.send_header("Content-Length", str(n))
                self.end_headers()
                self.wfile.write(pattern(n))
                return
            body = f"target={a.name} client={self.client_address[0]}:{self.client_address[1]} path={self.path}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            log("tcp", self.client_address)
            n = int(self.headers.get("Content-Length") or 0)
            h = hashlib.sha256()
            left = n
            while left > 0:
                chunk = self.rfile.read(min(left, 65536))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            body = f"received={n - left} sha256={h.hexdigest()}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 256

        def handle_error(self, request, client_address):
            # Connections reset by the appliance (a rejected endpoint, a revoked rule) are
            # expected in tests; keep the output quiet.
            pass

    class Server6(Server):
        address_family = socket.AF_INET6

    httpd = Server((a.bind, a.port), Handler)

    def udp_echo(family, bind):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((bind, a.udp_port))
        while True:
            data, addr = s.recvfrom(65535)
            log("udp", addr)
            reply = f"target={a.name} client={addr[0]}:{addr[1]} data=".encode() + data
            s.sendto(reply, addr)

    threading.Thread(target=udp_echo, args=(socket.AF_INET, a.bind), daemon=True).start()
    if a.bind6:
        httpd6 = Server6((a.bind6, a.port), Handler)
        threading.Thread(target=httpd6.serve_forever, daemon=True).start()
        threading.Thread(target=udp_echo, args=(socket.AF_INET6, a.bind6), daemon=True).start()
    print(f"target {a.name} on {a.bind}:{a.port}/tcp and :{a.udp_port}/udp", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
