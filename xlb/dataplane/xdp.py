"""Attach, detach and inspect XDP programs on interfaces through netlink.

pyroute2 opens the netlink socket inside the target namespace, so a program
compiled once in the root namespace can be attached in any netns by fd.
Native (driver) and generic (SKB) mode cannot coexist on one interface: a
mode switch detaches the other mode first.

Nothing here replaces a program it was not told it may replace. An empty hook is
attached with XDP_FLAGS_UPDATE_IF_NOEXIST; the one program a caller names (by an open fd:
xlb's own previous program, or the one `--force` takes over) is replaced with
XDP_FLAGS_REPLACE and IFLA_XDP_EXPECTED_FD. The kernel compares the program on the hook
with the expected one in the same call, so another writer that attaches in between makes
the call fail (ForeignProgramError) instead of being clobbered.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink.exceptions import NetlinkError

from xlb.dataplane import bpfsys
from xlb.errors import AttachError, BpfError, ForeignProgramError
from xlb.schema import MAX_FRAME

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_HW_MODE = 1 << 3
XDP_FLAGS_REPLACE = 1 << 4
MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}
_ANY_MODE_FLAGS = {**MODE_FLAGS, "offload": XDP_FLAGS_HW_MODE}
# IFLA_XDP_ATTACHED, as a number or as pyroute2's name for it
ATTACHED: dict[int | str, str | None] = {
    0: None, 1: "native", 2: "generic", 3: "offload", 4: "multi",
    "none": None, "xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload",
    "xdpmulti": "multi",
}
# the program attached in each mode (the kernel reports these whatever IFLA_XDP_ATTACHED says)
_MODE_IDS = (("IFLA_XDP_DRV_PROG_ID", "native"), ("IFLA_XDP_SKB_PROG_ID", "generic"),
             ("IFLA_XDP_HW_PROG_ID", "offload"))


@dataclass(frozen=True)
class XdpState:
    interface: str
    netns: str
    ifindex: int
    mode: str | None   # native, generic, offload, multi, or None when nothing is attached
    prog_id: int
    programs: tuple[tuple[str, int], ...] = ()  # (mode, prog id) of each program attached

    @property
    def where(self) -> str:
        return self.interface + (f" (netns {self.netns})" if self.netns else "")


@dataclass(frozen=True)
class Program:
    """A program on an XDP hook, as an error message or the audit log names it."""

    id: int
    name: str   # "" when the kernel would not say (the program went away meanwhile)
    tag: str    # hex of the kernel's tag: a hash of the instructions, stable across loads
    mode: str

    def describe(self) -> str:
        return (f"id {self.id}, name {self.name or '?'}, tag {self.tag or '?'}, "
                f"{self.mode} mode")

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "tag": self.tag, "mode": self.mode}


def program(prog_id: int, mode: str) -> Program:
    """Name and tag of the program with this id, as the kernel reports them."""
    try:
        fd = bpfsys.prog_fd_by_id(prog_id)
    except BpfError:
        return Program(prog_id, "", "", mode)
    try:
        return program_of_fd(fd, mode)
    finally:
        os.close(fd)


def program_of_fd(fd: int, mode: str) -> Program:
    info = bpfsys.prog_info(fd)
    return Program(int(info.id), info.name.decode(errors="replace"), bytes(info.tag).hex(),
                   mode)


def foreign_error(state: XdpState, prog: Program, note: str = "") -> ForeignProgramError:
    """The refusal to replace `prog`: what it is, where, and what the operator can do."""
    mine = (" (an xlb program, but not the one this instance pinned: another instance's, "
            "or one whose pins were removed)" if prog.name == "xlb_main" else "")
    return ForeignProgramError(
        f"{state.where} has another XDP program attached: {prog.describe()}{mine}{note}; "
        "xlb does not replace a program it does not own: remove it "
        f"({off_command(state, prog.mode)}) or load with --force to take it over",
        prog.as_dict())


def off_command(state: XdpState, mode: str) -> str:
    """The iproute2 command that detaches the program of `mode` from the interface."""
    where = f"-n {state.netns} " if state.netns else ""
    kind = {"generic": "xdpgeneric", "offload": "xdpoffload"}.get(mode, "xdpdrv")
    return f"ip {where}link set dev {state.interface} {kind} off"


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
    mode = ATTACHED.get(attached or 0, f"unknown ({attached})")
    programs = tuple((m, int(xdp.get_attr(attr))) for attr, m in _MODE_IDS
                     if xdp is not None and xdp.get_attr(attr))
    if not programs and prog_id and mode:
        programs = ((mode, int(prog_id)),)
    return XdpState(interface, netns, idx, mode, int(prog_id or 0), programs)


def open_netlink(netns: str = "") -> Any:
    """A netlink socket in `netns` (this namespace for "") to keep and pass as `ipr`.

    pyroute2 opens one in another namespace by forking a short-lived helper, once per
    thread that uses it: a process with an asyncio loop must keep that helper from
    sharing the loop's signal wakeup pipe (the agent does, in its main)."""
    return _open(netns)


def _set(ipr: Any, idx: int, fd: int, flags: int, expected_fd: int = -1) -> None:
    attrs: list[tuple[str, int]] = [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]
    if flags & XDP_FLAGS_REPLACE:
        attrs.append(("IFLA_XDP_EXPECTED_FD", expected_fd))
    ipr.link("set", index=idx, xdp={"attrs": attrs})


def _prog_id(fd: int) -> int:
    return int(bpfsys.prog_info(fd).id) if fd >= 0 else 0


def attach(interface: str, prog_fd: int, mode: str, netns: str = "", ipr: Any = None,
           expected_fd: int = -1) -> XdpState:
    """Attach the program in `mode` onto an empty hook, or in place of the program
    `expected_fd` is open on (xlb's own earlier program, or the one --force takes over),
    atomically where the mode stays. Any other program on the hook, there before or
    attached meanwhile, is left alone: ForeignProgramError names it. `ipr` as for query()."""
    if mode not in MODE_FLAGS:
        raise AttachError(f"unknown XDP mode {mode!r}: use native or generic")
    if ipr is None:
        with _open(netns) as own:
            return attach(interface, prog_fd, mode, netns, own, expected_fd)
    current = query(interface, netns, ipr)
    expected = _prog_id(expected_fd)
    for m, pid in current.programs:
        if pid != expected:
            raise foreign_error(current, program(pid, m))
    old = next((m for m, pid in current.programs if pid == expected), None)
    detached = False
    try:
        if old == mode:
            _set(ipr, current.ifindex, prog_fd, MODE_FLAGS[mode] | XDP_FLAGS_REPLACE,
                 expected_fd)
        else:
            if old is not None:  # a mode switch: the old mode's program goes first
                _set(ipr, current.ifindex, -1, _ANY_MODE_FLAGS[old] | XDP_FLAGS_REPLACE,
                     expected_fd)
                detached = True
            _set(ipr, current.ifindex, prog_fd, MODE_FLAGS[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST)
    except NetlinkError as e:
        if detached and old in MODE_FLAGS:  # put the expected program back where it was
            try:
                _set(ipr, current.ifindex, expected_fd,
                     MODE_FLAGS[old] | XDP_FLAGS_UPDATE_IF_NOEXIST)
            except NetlinkError:
                pass
        raise _attach_failed(e, interface, netns, ipr, mode, expected) from e
    state = query(interface, netns, ipr)
    if state.mode != mode:
        raise AttachError(f"asked for {mode} XDP on {interface}, kernel reports {state.mode}")
    return state


def _attach_failed(e: NetlinkError, interface: str, netns: str, ipr: Any, mode: str,
                   expected: int) -> Exception:
    """Why an attach failed: another writer's program (a race the kernel caught), a
    program held by a bpf_link, or the driver and the link."""
    if e.code in (errno.EEXIST, errno.EBUSY):
        now = query(interface, netns, ipr)
        for m, pid in now.programs:
            if pid != expected:
                return foreign_error(now, program(pid, m), " (attached meanwhile)")
            if e.code == errno.EBUSY:
                return AttachError(
                    f"{now.where}: the program {program(pid, m).describe()} is attached "
                    "through a bpf_link, which only its owner can detach: stop that owner")
    hint = ""
    if mode == "native" and e.code == errno.ERANGE:
        hint = (f" (the link's MTU is too large: native XDP takes frames of at most "
                f"{MAX_FRAME} bytes, one buffer; lower the MTU of {interface} and of "
                "its peer, or use --xdp-mode generic)")
    elif mode == "native":
        hint = " (the driver has no native XDP: try --xdp-mode generic)"
    return AttachError(f"attaching XDP ({mode}) to {interface} failed: "
                       f"{e.args[-1] if e.args else e}{hint}")


def detach(interface: str, netns: str = "", expected_fd: int = -1) -> XdpState:
    """Detach what is attached; with `expected_fd`, only the program it is open on (the
    kernel checks, so a program attached meanwhile by another writer stays)."""
    state = query(interface, netns)
    expected = _prog_id(expected_fd)
    with _open(netns) as ipr:
        for m, pid in state.programs:
            if m not in _ANY_MODE_FLAGS or (expected and pid != expected):
                continue
            flags = _ANY_MODE_FLAGS[m] | (XDP_FLAGS_REPLACE if expected else 0)
            try:
                _set(ipr, state.ifindex, -1, flags, expected_fd)
            except NetlinkError as e:
                if not (expected and e.code == errno.EEXIST):
                    raise AttachError(f"detaching XDP ({m}) from {interface} failed: "
                                      f"{e.args[-1] if e.args else e}") from e
    return query(interface, netns)
