#!/usr/bin/env python3
"""A small HTTP CONNECT proxy (RFC 9110 section 9.3.6) for tests/netns/tls_relay.rs.

Usage: connect_proxy.py HOST PORT

Listens on HOST:PORT; for each client reads one request head (at most 8 KiB), answers
CONNECT with 200 and splices both ways, anything else with 405. Every request is one line on
stdout, flushed, which the test counts:

    CONNECT 203.0.113.10:443 200 from 10.69.1.2
    CONNECT 203.0.113.10:444 502 from 10.69.1.2 ([Errno 111] Connection refused)
    REFUSED GET / HTTP/1.1 from 10.69.1.2

The test starts it in its own namespace and kills it by PID at teardown.
"""

import socket
import socketserver
import sys
import threading

MAX_HEAD = 8192
UPSTREAM_TIMEOUT_S = 10


def log(*parts):
    print(*parts, flush=True)


def pipe(src, dst):
    """Copies src to dst until EOF or an error, then half-closes dst."""
    try:
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def read_head(conn):
    """The request head and whatever followed it, or None (EOF or too long)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        if len(buf) > MAX_HEAD:
            return None
        chunk = conn.recv(4096)
        if not chunk:
            return None
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        conn = self.request
        peer = self.client_address[0]
        got = read_head(conn)
        if got is None:
            log("DROPPED from", peer)
            return
        head, rest = got
        line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        if len(parts) != 3 or parts[0] != "CONNECT":
            log("REFUSED", line[:100], "from", peer)
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            return
        target = parts[1]
        host, _, port = target.rpartition(":")
        try:
            up = socket.create_connection(
                (host.strip("[]"), int(port)), timeout=UPSTREAM_TIMEOUT_S
            )
        except (OSError, ValueError) as e:
            log("CONNECT", target, "502 from", peer, f"({e})")
            conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        up.settimeout(None)
        log("CONNECT", target, "200 from", peer)
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            up.sendall(rest)
        back = threading.Thread(target=pipe, args=(up, conn), daemon=True)
        back.start()
        pipe(conn, up)
        back.join()
        up.close()


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: connect_proxy.py HOST PORT")
    with Server((sys.argv[1], int(sys.argv[2])), Handler) as server:
        log("listening on", f"{sys.argv[1]}:{sys.argv[2]}")
        server.serve_forever()


if __name__ == "__main__":
    main()
