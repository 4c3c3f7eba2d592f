"""A lab backend's servers: HTTP on :80 naming the backend, UDP echo on VIP:53.

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

    http = ThreadingHTTPServer(("0.0.0.0", 80), Handler)
    http.daemon_threads = True
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((args.vip, 53))

    def echo() -> None:
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(body + data, peer)

    threading.Thread(target=echo, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(0)))
    http.serve_forever()


if __name__ == "__main__":
    main()
