"""What the data plane needs of the kernel, as capabilities rather than uid 0.

Production runs the agent as a dedicated user with just these (systemd's
AmbientCapabilities=). Found by trying on kernel 6.18, each one taken away in turn:

- CAP_BPF: create maps, load the program, pin and open pins;
- CAP_PERFMON: the verifier refuses the program without it (pointer arithmetic on
  packet data, bpf_probe_read);
- CAP_NET_ADMIN: load an XDP program at all, and attach it through netlink;
- CAP_SYS_ADMIN: only for an interface in a named network namespace: entering one
  (setns, for the attach and for the health checks' sockets) needs it.

Health checks are TCP connects and HTTP requests, which need no CAP_NET_RAW.
"""

from __future__ import annotations

import os

from xlb.errors import PrivilegeError

# capability numbers of linux/capability.h
CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21,
                "CAP_PERFMON": 38, "CAP_BPF": 39}
DATAPLANE = ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN")
NETNS = ("CAP_SYS_ADMIN",)


def needed(netns: str = "") -> tuple[str, ...]:
    """The capabilities the data plane of an instance needs (its interface in `netns`)."""
    return DATAPLANE + (NETNS if netns else ())


def effective(status: str = "/proc/self/status") -> int:
    """This process's effective capability set, as a bit mask."""
    with open(status) as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def missing(caps: tuple[str, ...], mask: int | None = None) -> list[str]:
    """The capabilities of `caps` that are not in `mask` (this process's by default)."""
    have = effective() if mask is None else mask
    return [c for c in caps if not have >> CAPABILITIES[c] & 1]


def require(what: str, netns: str = "") -> None:
    """PrivilegeError naming every capability `what` lacks (root has them all)."""
    lacking = missing(needed(netns))
    if lacking:
        why = f" (its interface is in network namespace {netns!r})" if NETNS[0] in lacking else ""
        raise PrivilegeError(f"{what} needs {', '.join(needed(netns))}{why}; missing: "
                             f"{', '.join(lacking)}: run it as root, or give its user these "
                             "capabilities (AmbientCapabilities= in its systemd unit, or "
                             "setpriv --ambient-caps)")


def require_writable(what: str, own: list[str], shared: tuple[str, ...] = (),
                     files: tuple[str, ...] = ()) -> None:
    """PrivilegeError naming each directory this process cannot write (or, for one yet
    to be made, its nearest existing parent), each file in its `own` directories and
    each of `files` that it cannot read and write: an agent that is not root owns its
    pins, state and audit log. Checked up front, so a wrong owner is one clear line, not
    a failure half way through a start."""
    import pwd

    def usable(path: str, mode: int) -> bool:
        return os.access(path, mode, effective_ids=True)

    bad: list[str] = []
    for d in [*own, *shared]:
        here = d
        while not os.path.isdir(here) and os.path.dirname(here) != here:
            here = os.path.dirname(here)
        if not usable(here, os.W_OK | os.X_OK):
            bad.append(here)
        elif here == d and d in own:
            bad += [os.path.join(d, n) for n in sorted(os.listdir(d))
                    if not usable(os.path.join(d, n), os.R_OK | os.W_OK)]
    bad += [f for f in files if os.path.exists(f) and not usable(f, os.R_OK | os.W_OK)]
    if bad:
        try:
            user = pwd.getpwuid(os.geteuid()).pw_name
        except KeyError:
            user = f"uid {os.geteuid()}"
        raise PrivilegeError(f"{what}: {user} cannot write {', '.join(dict.fromkeys(bad))}; "
                             f"make {user} their owner (chown -R {user}: DIR; the systemd "
                             "unit does it for its own directories) or run it as root")
