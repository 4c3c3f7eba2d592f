"""Attach, detach and inspect XDP programs on interfaces through netlink.

pyroute2 opens the netlink socket inside the target namespace, so a program
compiled once in the root namespace can be attached in any netns by fd.
Native (driver) and generic (SKB) mode cannot coexist on one interface: a
mode switch detaches the other mode first.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from xlb.errors import AttachError
from xlb.schema import MAX_FRAME

XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
# IFLA_XDP_ATTACHED, as a number or as pyroute2's name for it
ATTACHED: dict[int | str, str | None] = {
    0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi",
    "none": None, "xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload",
    "xdpmulti": "multi",
}


@dataclass(frozen=True)
class XdpState:
    interface: str
    netns: str
    ifindex: int
    mode: str | None   # native, generic, offload, multi, or None when nothing is attached
    prog_id: int


def _open(netns: str) -> Any:
    return NetNS(netns) if netns else IPRoute()


def _index(ipr: Any, interface: str, netns: str) -> int:
    found = ipr.link_lookup(ifname=interface)
    if not found:
        where = f"network namespace {netns!r}" if netns else "this network namespace"
        raise AttachError(f"interface {interface!r} not found in {where}")
    return int(found[0])


def query(interface: str, netns: str = "", ipr: Any = None) -> XdpState:
    """What is attached to `interface`. `ipr`: a netlink socket the caller keeps open
    (open_netlink): opening one in a namespace costs ~10 ms, asking on it under 1 ms."""
    if ipr is None:
        with _open(netns) as own:
            return query(interface, netns, own)
    idx = _index(ipr, interface, netns)
    link = ipr.get_links(idx)[0]
    xdp = link.get_attr("IFLA_XDP")
    attached = xdp.get_attr("IFLA_XDP_ATTACHED") if xdp is not None else 0
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID") if xdp is not None else 0
    return XdpState(interface, netns, idx, ATTACHED.get(attached or 0, f"unknown ({attached})"),
                    int(prog_id or 0))


def open_netlink(netns: str = "") -> Any:
    """A netlink socket in `netns` (this namespace for "") to keep and pass as `ipr`.

    pyroute2 opens one in another namespace by forking a short-lived helper, once per
    thread that uses it: a process with an asyncio loop must keep that helper from
    sharing the loop's signal wakeup pipe (the agent does, in its main)."""
    return _open(netns)


def _set(ipr: Any, idx: int, fd: int, flags: int) -> None:
    ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]})


def attach(interface: str, prog_fd: int, mode: str, netns: str = "",
           ipr: Any = None) -> XdpState:
    """Attach (or atomically replace) the program; switch mode if another is in effect.
    `ipr` as for query()."""
    if mode not in MODE_FLAGS:
        raise AttachError(f"unknown XDP mode {mode!r}: use native or generic")
    if ipr is None:
        with _open(netns) as own:
            return attach(interface, prog_fd, mode, netns, own)
    current = query(interface, netns, ipr)
    if current.mode and current.mode != mode and current.mode in MODE_FLAGS:
        _set(ipr, current.ifindex, -1, MODE_FLAGS[current.mode])
    try:
        _set(ipr, current.ifindex, prog_fd, MODE_FLAGS[mode])
    except NetlinkError as e:
        hint = ""
        if mode == "native" and e.code == errno.ERANGE:
            hint = (f" (the link's MTU is too large: native XDP takes frames of at most "
                    f"{MAX_FRAME} bytes, one buffer; lower the MTU of {interface} and of "
                    "its peer, or use --xdp-mode generic)")
        elif mode == "native":
            hint = " (the driver has no native XDP: try --xdp-mode generic)"
        raise AttachError(f"attaching XDP ({mode}) to {interface} failed: "
                          f"{e.args[-1] if e.args else e}{hint}") from e
    state = query(interface, netns, ipr)
    if state.mode != mode:
        raise AttachError(f"asked for {mode} XDP on {interface}, kernel reports {state.mode}")
    return state


def detach(interface: str, netns: str = "") -> XdpState:
    state = query(interface, netns)
    if state.mode in MODE_FLAGS:
        with _open(netns) as ipr:
            _set(ipr, state.ifindex, -1, MODE_FLAGS[state.mode])
    return query(interface, netns)
