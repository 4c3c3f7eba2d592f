"""A lab backend's servers: HTTP on :80 naming the backend, UDP echo on :53, for IPv4 and
IPv6 (HTTP on 0.0.0.0:80 and [::]:80; the echo on both VIPs and the backend's own
addresses).

Runs inside a backend namespace and answers from whatever address the request reached:
the VIP on lo for a DSR flow (the reply goes straight to the client), the backend's own
address for a SNAT flow (the reply goes to the LB's SNAT address, and the LB translates it
back). Both servers say who asked, as the backend saw it: the HTTP header `X-Client:
addr:port` and the echo's second line, so a test proves the mode from the backend side
(a DSR flow shows the client's address, a SNAT flow an address of the LB's pool).
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def client_text(address: str, port: int) -> str:
    """Who asked, as both servers spell it: addr:port ([addr]:port for IPv6)."""
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def parse_client(text: str) -> tuple[str, int]:
    """client_text's inverse: (address, port)."""
    address, _, port = text.strip().rpartition(":")
    return address.strip("[]"), int(port)


def echo_body(name: str, address: str, port: int, data: bytes) -> bytes:
    """The UDP echo's answer: the backend's name, who asked, then the query itself."""
    return f"{name}\n{client_text(address, port)}\n".encode() + data


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--vip", required=True, help="UDP answers must come from the VIP (DSR)")
    ap.add_argument("--vip6", help="the IPv6 VIP, for the UDP echo (default: no IPv6 echo)")
    ap.add_argument("--address", help="the backend's own IPv4 address (SNAT flows' echo)")
    ap.add_argument("--address6", help="the backend's own IPv6 address (SNAT flows' echo)")
    args = ap.parse_args()
    body = f"{args.name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", args.name)
            self.send_header("X-Client", client_text(*self.client_address[:2]))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    class HTTP6Server(ThreadingHTTPServer):
        address_family = socket.AF_INET6

        def server_bind(self) -> None:  # [::]:80 next to 0.0.0.0:80, not instead of it
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            super().server_bind()

    http = ThreadingHTTPServer(("0.0.0.0", 80), Handler)
    http6 = HTTP6Server(("::", 80), Handler)
    for server in (http, http6):
        server.daemon_threads = True
    socks = []
    for address in (args.vip, args.vip6, args.address, args.address6):
        if address:  # one socket per address: each answers from the address it was asked
            sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.bind((address, 53))
            socks.append(sock)

    def echo(sock: socket.socket) -> None:
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(echo_body(args.name, peer[0], peer[1], data), peer)

    for sock in socks:
        threading.Thread(target=echo, args=(sock,), daemon=True).start()
    threading.Thread(target=http6.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    http.serve_forever()


if __name__ == "__main__":
    main()
