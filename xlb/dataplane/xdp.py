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
import socket
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink import NLM_F_REQUEST, genlmsg
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import GenericNetlinkSocket

from xlb.dataplane import bpfsys
from xlb.errors import AttachError, BpfError, ForeignProgramError
from xlb.netns import socket_in_netns
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
    (open_netlink): opening one in a namespace costs ~10 ms, asking on it under 1 ms; or
    a Look (opened in `netns`), which asks in some 20 microseconds."""
    if ipr is None:
        with _open(netns) as own:
            return query(interface, netns, own)
    if isinstance(ipr, Look):
        return ipr.query(interface)
    idx = _index(ipr, interface, netns)
    link = ipr.get_links(idx)[0]
    xdp = link.get_attr("IFLA_XDP")
    return _state(interface, netns, idx,
                  {} if xdp is None else {name: xdp.get_attr(name) for name in _XDP_ATTRS})


# the attributes of IFLA_XDP that say what is attached, by pyroute2's names and numbers
_XDP_ATTRS = {"IFLA_XDP_ATTACHED": 2, "IFLA_XDP_PROG_ID": 4, "IFLA_XDP_DRV_PROG_ID": 5,
              "IFLA_XDP_SKB_PROG_ID": 6, "IFLA_XDP_HW_PROG_ID": 7}
_XDP_NAMES = {number: name for name, number in _XDP_ATTRS.items()}


def _state(interface: str, netns: str, idx: int, attrs: dict[str, Any]) -> XdpState:
    """An XdpState from IFLA_XDP's attributes (by name; absent ones None or missing)."""
    attached = attrs.get("IFLA_XDP_ATTACHED") or 0
    prog_id = attrs.get("IFLA_XDP_PROG_ID") or 0
    mode = ATTACHED.get(attached, f"unknown ({attached})")
    programs = tuple((m, int(attrs[attr])) for attr, m in _MODE_IDS if attrs.get(attr))
    if not programs and prog_id and mode:
        programs = ((mode, int(prog_id)),)
    return XdpState(interface, netns, idx, mode, int(prog_id), programs)


class Look:
    """A bare rtnetlink socket in a namespace, kept open to ask what is attached to an
    interface once per tick: one RTM_GETLINK by name, without statistics, of whose answer
    only IFLA_XDP is read. The same answer as query(), in some 20 microseconds where
    pyroute2 parses every attribute of the link (about a millisecond)."""

    def __init__(self, netns: str = "") -> None:
        self.netns = netns
        kind = (socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self.sock = socket_in_netns(netns, *kind) if netns else socket.socket(*kind)
        except OSError as e:
            raise AttachError(f"network namespace {netns!r}: {e}") from e
        self.sock.settimeout(5.0)
        self.seq = 0
        self._buf = bytearray(1 << 20)  # any link's answer fits (statistics left out)

    def close(self) -> None:
        self.sock.close()

    def query(self, interface: str) -> XdpState:
        """As query(interface, netns): AttachError when the interface is not there."""
        self.seq += 1
        name = interface.encode() + b"\0"
        attrs = (_nla(_IFLA_IFNAME, name)
                 + _nla(_IFLA_EXT_MASK, struct.pack("=I", _RTEXT_FILTER_SKIP_STATS)))
        body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0) + attrs
        self.sock.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETLINK, _NLM_F_REQUEST,
                                   self.seq, 0) + body)
        while True:
            size = self.sock.recv_into(self._buf)
            data = bytes(self._buf[:size])
            length, kind, _flags, seq, _pid = struct.unpack_from("=IHHII", data)
            if seq != self.seq:
                continue  # an answer to an earlier question that timed out
            if kind == _NLMSG_ERROR:
                code = -struct.unpack_from("=i", data, 16)[0]
                if code == errno.ENODEV:
                    where = (f"network namespace {self.netns!r}" if self.netns else
                             "this network namespace")
                    raise AttachError(f"interface {interface!r} not found in {where}")
                raise AttachError(f"asking about {interface}: {os.strerror(code)}")
            idx = struct.unpack_from("=i", data, 20)[0]
            xdp = _nested(data[:length], 32, _IFLA_XDP)
            got = {} if xdp is None else {
                _XDP_NAMES[t]: struct.unpack_from("=I", xdp, o)[0]
                if t != _XDP_ATTRS["IFLA_XDP_ATTACHED"] else xdp[o]
                for t, o in _attrs(xdp, 0) if t in _XDP_NAMES}
            return _state(interface, self.netns, idx, got)


_RTM_GETLINK, _NLM_F_REQUEST, _NLMSG_ERROR = 18, 1, 2
_IFLA_IFNAME, _IFLA_XDP, _IFLA_EXT_MASK = 3, 43, 29
_RTEXT_FILTER_SKIP_STATS = 1 << 3
_NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def _nla(kind: int, payload: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(payload), kind) + payload + b"\0" * (-len(payload) % 4)


def _attrs(data: bytes, at: int) -> Iterator[tuple[int, int]]:
    """(type, payload offset) of each netlink attribute in data[at:]."""
    while at + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, at)
        if size < 4:
            return
        yield kind & _NLA_TYPE_MASK, at + 4
        at += (size + 3) & ~3


def _nested(data: bytes, at: int, want: int) -> bytes | None:
    """The payload of the attribute `want` among those at data[at:] (None: absent)."""
    for kind, offset in _attrs(data, at):
        if kind == want:
            size = struct.unpack_from("=H", data, offset - 4)[0]
            return data[offset:offset - 4 + size]
    return None


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
    return attach_timed(interface, prog_fd, mode, netns, ipr, expected_fd)[0]


def attach_timed(interface: str, prog_fd: int, mode: str, netns: str = "", ipr: Any = None,
                 expected_fd: int = -1) -> tuple[XdpState, float]:
    """attach(), and the seconds the hook was empty: a mode switch detaches the old
    mode's program before it attaches the new one (a device cannot hold both), and the
    packets of that gap meet no XDP program. 0 where the program is replaced in place.
    A failed switch puts `expected_fd`'s program back in its old mode, and says so."""
    if mode not in MODE_FLAGS:
        raise AttachError(f"unknown XDP mode {mode!r}: use native or generic")
    if ipr is None:
        with _open(netns) as own:
            return attach_timed(interface, prog_fd, mode, netns, own, expected_fd)
    current = query(interface, netns, ipr)
    expected = _prog_id(expected_fd)
    for m, pid in current.programs:
        if pid != expected:
            raise foreign_error(current, program(pid, m))
    old = next((m for m, pid in current.programs if pid == expected), None)
    detached = 0.0  # when the old mode's program went (0: it did not)
    gap = 0.0
    try:
        if old == mode:
            _set(ipr, current.ifindex, prog_fd, MODE_FLAGS[mode] | XDP_FLAGS_REPLACE,
                 expected_fd)
        else:
            if old is not None:  # a mode switch: the old mode's program goes first
                _set(ipr, current.ifindex, -1, _ANY_MODE_FLAGS[old] | XDP_FLAGS_REPLACE,
                     expected_fd)
                detached = time.perf_counter()
            _set(ipr, current.ifindex, prog_fd, MODE_FLAGS[mode] | XDP_FLAGS_UPDATE_IF_NOEXIST)
            if detached:
                gap = time.perf_counter() - detached
    except NetlinkError as e:
        back = ""
        if detached and old in MODE_FLAGS:  # put the expected program back where it was
            try:
                _set(ipr, current.ifindex, expected_fd,
                     MODE_FLAGS[old] | XDP_FLAGS_UPDATE_IF_NOEXIST)
                back = f"; the program is attached in {old} mode again, as before"
            except NetlinkError as again:
                why = again.args[-1] if again.args else again
                back = f"; putting it back in {old} mode failed too ({why}): nothing is attached"
        err = _attach_failed(e, interface, netns, ipr, mode, expected)
        if back and type(err) is AttachError:
            err = AttachError(f"{err}{back}")
        raise err from e
    state = query(interface, netns, ipr)
    if state.mode != mode:
        raise AttachError(f"asked for {mode} XDP on {interface}, kernel reports {state.mode}")
    return state, gap


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


NETDEV_CMD_DEV_GET = 1
NETDEV_XDP_ACT_BASIC = 1 << 0  # enum netdev_xdp_act: the driver runs XDP programs itself


class _netdev_dev(genlmsg):
    """A device of the `netdev` generic netlink family (include/uapi/linux/netdev.h)."""

    nla_map = (("NETDEV_A_DEV_UNSPEC", "none"),
               ("NETDEV_A_DEV_IFINDEX", "uint32"),
               ("NETDEV_A_DEV_PAD", "none"),
               ("NETDEV_A_DEV_XDP_FEATURES", "uint64"))


def native_supported(interface: str, netns: str = "") -> bool | None:
    """Whether the driver of `interface` runs XDP natively, as the kernel says (the
    netdev family's xdp-features, Linux 6.3+); None where the kernel cannot say. Asked
    before a switch to native detaches anything: a driver without it refuses the attach,
    and the packets of the gap would have met no program for nothing."""
    try:
        with _open(netns) as ipr:
            idx = _index(ipr, interface, netns)
        sock = GenericNetlinkSocket(netns=netns or None)
    except (NetlinkError, OSError):
        return None
    try:
        sock.bind("netdev", _netdev_dev)
        msg = _netdev_dev()
        msg["cmd"], msg["version"] = NETDEV_CMD_DEV_GET, 1
        msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", idx)]
        answer = sock.nlm_request(msg, msg_type=sock.prid, msg_flags=NLM_F_REQUEST)
        features = [m.get_attr("NETDEV_A_DEV_XDP_FEATURES") for m in answer]
    except (NetlinkError, OSError):  # no netdev family (an older kernel), or gone meanwhile
        return None
    finally:
        sock.close()
    if not features or features[0] is None:
        return None
    return bool(int(features[0]) & NETDEV_XDP_ACT_BASIC)


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
