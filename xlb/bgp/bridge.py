"""The relay ExaBGP runs as its API process: its stdin/stdout <-> the Speaker's Unix socket.

ExaBGP only talks to processes it starts itself, and the agent cannot be that process, so
this tiny program stands between them: ExaBGP's messages (stdin) go to the socket the
Speaker listens on, the Speaker's commands (socket) go to ExaBGP (stdout). It uses only the
standard library so it starts in milliseconds, and it ends as soon as either side closes:
ExaBGP is configured to end with it, so a Speaker that goes away takes ExaBGP along, and an
ExaBGP that ends closes our stdin.

    python -m xlb.bgp.bridge SOCKET
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time


def _connect(path: str, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _pump(src: int, dst: int) -> None:
    while True:
        data = os.read(src, 65536)
        if not data:
            return
        while data:
            data = data[os.write(dst, data):]


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: python -m xlb.bgp.bridge SOCKET\n")
        return 2
    try:
        sock = _connect(argv[1])
    except OSError as e:
        sys.stderr.write(f"xlb bridge: cannot connect to {argv[1]}: {e}\n")
        return 1
    done = threading.Event()

    def run(src: int, dst: int) -> None:
        try:
            _pump(src, dst)
        except OSError:
            pass
        done.set()

    for src, dst in ((sys.stdin.fileno(), sock.fileno()), (sock.fileno(), sys.stdout.fileno())):
        threading.Thread(target=run, args=(src, dst), daemon=True).start()
    done.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
