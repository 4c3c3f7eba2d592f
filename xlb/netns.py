"""A socket made inside another network namespace, without moving the process there.

Health checks reach backends from the namespace they live in, and the agent's
attachment watch asks the kernel about an interface in the instance's namespace:
both need a socket created there, and only that.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import socket
import threading

log = logging.getLogger(__name__)

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


class NetnsError(OSError):
    """No socket could be made in the namespace; str() is the whole story."""

    def __str__(self) -> str:
        return str(self.strerror)


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def socket_in_netns(
    netns: str, family: socket.AddressFamily | int, type: socket.SocketKind | int,
    proto: int = 0,
) -> socket.socket:
    """A socket created inside network namespace `netns` (a name under /run/netns, or a
    path).

    setns() moves only the calling thread, and a socket keeps the namespace it was
    created in for its whole life: so the calling thread enters the namespace for the
    socket() call alone and goes back at once. No thread is started and nothing else
    runs in between, so thousands of checks a second cost microseconds each (a thread
    per check, or a worker thread whose every answer wakes the event loop, cost ten
    times more and flood the loop's wake-up pipe).
    """
    home = _home()
    try:
        fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsError(e.errno, f"netns {netns}: {e.strerror}") from None
    try:
        if _libc().setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise NetnsError(err, f"setns {netns}: {os.strerror(err)}")
        try:
            return socket.socket(family, type, proto)
        finally:
            if _libc().setns(home, CLONE_NEWNET) != 0:  # cannot happen: fail loudly
                log.critical("cannot return to the agent's own network namespace after "
                             "making a socket in %s: %s; exiting", netns,
                             os.strerror(ctypes.get_errno()))
                os._exit(1)
    finally:
        os.close(fd)


_HOME = threading.local()


def _home() -> int:
    """An fd of the calling thread's own network namespace (opened once per thread)."""
    fd: int | None = getattr(_HOME, "fd", None)
    if fd is None:
        fd = _HOME.fd = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    return fd
