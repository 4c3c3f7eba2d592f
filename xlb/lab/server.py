"""A lab backend's servers: HTTP on :80 naming the backend, UDP echo on VIP:53,
for IPv4 and IPv6 (HTTP on 0.0.0.0:80 and [::]:80, echo on both VIPs).

Runs inside a backend namespace; answers from whatever address the request
reached (the VIP on lo), which is what makes the replies DSR.
"""

from __future__ import annotations

import argparse
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--vip", required=True, help="UDP answers must come from the VIP (DSR)")
    ap.add_argument("--vip6", help="the IPv6 VIP, for the UDP echo (default: no IPv6 echo)")
    args = ap.parse_args()
    body = f"{args.name}\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Backend", args.name)
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
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.vip, 53))
    socks = [udp]
    if args.vip6:
        udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        udp6.bind((args.vip6, 53))
        socks.append(udp6)

    def echo(sock: socket.socket) -> None:
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(body + data, peer)

    for sock in socks:
        threading.Thread(target=echo, args=(sock,), daemon=True).start()
    threading.Thread(target=http6.serve_forever, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    http.serve_forever()


if __name__ == "__main__":
    main()
