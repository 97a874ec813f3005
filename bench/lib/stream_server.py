#!/usr/bin/env python3
"""The benchmarks' HTTP test server: stream_server.py ADDRESS PORT.

GET /N streams N bytes from memory; POST drains the body and answers its size. An IPv6
ADDRESS (e.g. `::`) listens dual stack.
"""
import http.server
import socket
import socketserver
import sys

CHUNK = b"\x5a" * (1 << 20)


class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        n = int(self.path.strip("/"))
        self.send_response(200)
        self.send_header("Content-Length", str(n))
        self.end_headers()
        while n > 0:
            k = min(n, len(CHUNK))
            self.wfile.write(CHUNK[:k])
            n -= k

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        got = 0
        while got < n:
            b = self.rfile.read(min(n - got, 1 << 20))
            if not b:
                break
            got += len(b)
        body = str(got).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def main():
    address, port = sys.argv[1], int(sys.argv[2])
    if ":" in address:
        S.address_family = socket.AF_INET6
    S((address, port), H).serve_forever()


if __name__ == "__main__":
    main()
