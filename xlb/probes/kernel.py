"""What the running kernel offers the probes, found by looking, never by version.

tracefs event directories say which tracepoints exist, their format files name the
values of enum fields (drop reasons), /proc/kallsyms and tracefs's kprobe_events say
whether a kprobe can attach, and the kernel's own BTF gives structure offsets and enum
names (the headers BCC compiles against may be another kernel's).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import struct
import subprocess

from xlb import privileges
from xlb.dataplane import bpfsys
from xlb.errors import BpfError

log = logging.getLogger(__name__)

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
BTF_PATH = "/sys/kernel/btf/vmlinux"


def tracefs(mount: bool = True) -> str | None:
    """The tracefs directory (mounted at /sys/kernel/tracing if it is not and `mount`);
    None if there is none (no tracefs, or /sys is a namespace's own copy)."""
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events")):
            return path
    if mount and os.path.isdir("/sys/kernel/tracing"):
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing"],
                           capture_output=True, text=True, check=False)
        if r.returncode == 0:
            log.info("mounted tracefs on /sys/kernel/tracing (the probes need it)")
            return tracefs(mount=False)
        log.warning("tracefs could not be mounted: %s", r.stderr.strip())
    return None


# -- privileges --------------------------------------------------------------------------
def needs(*caps: str) -> str:
    """What a refused bpf() call needs, and which of it this process lacks."""
    lacking = privileges.missing(caps)
    if not lacking:
        return (f"needs {' and '.join(caps)}: this process has them, so something else "
                "forbids it (kernel lockdown, a security module)")
    return f"needs {' and '.join(caps)}; this process lacks {' and '.join(lacking)}"


def tracing_refused() -> str | None:
    """Why this process may not load tracing programs here (the kernel's own error, and
    the capabilities they need), or None if it may: a trial load, not a guess."""
    try:
        bpfsys.trial_load(bpfsys.PROG_TYPE_TRACEPOINT)
    except BpfError as e:
        if e.errno in (errno.EPERM, errno.EACCES):
            return f"attach failed: {os.strerror(e.errno)} ({needs('CAP_BPF', 'CAP_PERFMON')})"
        log.debug("trial load: %s (left to the probe's own load)", e)
    return None


def tracefs_refused() -> str | None:
    """Why this process cannot look into a mounted tracefs (it is root's, mode 0700, by
    default: an agent run as its own user cannot read it), or None."""
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(path) and not os.access(path, os.R_OK | os.X_OK, effective_ids=True):
            st = os.stat(path)
            return (f"tracefs ({path}) is not readable by this user (uid {os.geteuid()}; it "
                    f"belongs to uid {st.st_uid}, mode {st.st_mode & 0o7777:04o}): the probes "
                    "read its event directories; run the agent as root, or give its user "
                    "access to tracefs")
    return None


def event_dir(event: str) -> str | None:
    """The tracefs directory of `category:name`, if this kernel has that tracepoint."""
    root = tracefs()
    if root is None:
        return None
    path = os.path.join(root, "events", *event.split(":", 1))
    return path if os.path.isdir(path) else None


def symbolic(event: str, field: str) -> dict[int, str]:
    """The names the tracepoint's `print fmt` gives the values of `field`
    (__print_symbolic(REC->field, { 2, "NO_SOCKET" }, ...)); empty if none."""
    path = event_dir(event)
    if path is None:
        return {}
    with open(os.path.join(path, "format")) as f:
        return parse_symbolic(f.read(), field)


def parse_symbolic(text: str, field: str) -> dict[int, str]:
    """The value names of `field` in a tracepoint format's __print_symbolic()."""
    start = text.find(f"__print_symbolic(REC->{field},")
    if start < 0:
        return {}
    end = text.find(")", start + len("__print_symbolic("))
    pairs = re.findall(r'\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*"([^"]*)"\s*\}', text[start:end])
    return {int(v, 0): name for v, name in pairs}


def has_kprobes() -> tuple[bool, str]:
    """Whether kprobes can attach here, and if not, why (as seen)."""
    root = tracefs()
    if root is None:
        return False, "no tracefs"
    if not os.path.exists(os.path.join(root, "kprobe_events")):
        return False, "this kernel has no kprobes (no kprobe_events in tracefs)"
    return True, ""


@functools.lru_cache(maxsize=1)
def _kallsyms() -> frozenset[str]:
    with open("/proc/kallsyms") as f:
        return frozenset(line.split()[2] for line in f)


def raw_tracepoints() -> bool:
    """Whether BPF programs can attach to raw tracepoints here (the kernel function that
    finds them is in /proc/kallsyms)."""
    return kernel_symbol("bpf_find_raw_tracepoint") or kernel_symbol("bpf_get_raw_tracepoint")


def kernel_symbol(name: str) -> bool:
    try:
        return name in _kallsyms()
    except OSError:
        return False


# -- BTF -------------------------------------------------------------------------------
_KIND_EXTRA = {1: 4, 3: 12, 14: 4, 17: 4}           # fixed extra bytes per kind
_KIND_PER_MEMBER = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # bytes per vlen item


class Btf:
    """The kernel's BTF, read once: enough to find struct members and enum values."""

    def __init__(self, path: str = BTF_PATH):
        with open(path, "rb") as f:
            data = f.read()
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<HBBIIIII", data)
        if magic != 0xEB9F:
            raise ValueError(f"{path} is not BTF")
        self.strings = data[hdr_len + str_off: hdr_len + str_off + str_len]
        types = data[hdr_len + type_off: hdr_len + type_off + type_len]
        self.types: list[tuple[int, int, int, int, int]] = [(0, 0, 0, 0, 0)]  # id 0: void
        self.by_name: dict[tuple[int, str], int] = {}
        pos = 0
        while pos < len(types):
            name_off, info, size = struct.unpack_from("<III", types, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            extra = _KIND_EXTRA.get(kind, 0) + _KIND_PER_MEMBER.get(kind, 0) * vlen
            self.types.append((kind, name_off, info, size, pos + 12))
            if name_off and kind in (4, 5, 6, 19):
                self.by_name.setdefault((kind, self._str(name_off)), len(self.types) - 1)
            pos += 12 + extra
        self.raw = types

    def _str(self, off: int) -> str:
        end = self.strings.index(b"\0", off)
        return self.strings[off:end].decode()

    def member_offset(self, struct_name: str, member: str) -> int:
        """Byte offset of `member` in `struct struct_name`, looking into anonymous
        members (unions, struct groups); KeyError if there is none."""
        tid = self.by_name.get((4, struct_name))
        if tid is None:
            raise KeyError(f"struct {struct_name} not in BTF")
        found = self._find(tid, member)
        if found is None:
            raise KeyError(f"struct {struct_name} has no member {member}")
        return found // 8

    def _find(self, tid: int, member: str) -> int | None:
        kind, _n, info, _s, at = self.types[tid]
        kflag = info >> 31
        for i in range(info & 0xFFFF):
            name_off, mtype, off = struct.unpack_from("<III", self.raw, at + 12 * i)
            bits = off & 0xFFFFFF if kflag else off
            name = self._str(name_off) if name_off else ""
            if name == member:
                return bits
            if not name:
                inner = self._resolve(mtype)
                if self.types[inner][0] in (4, 5):
                    sub = self._find(inner, member)
                    if sub is not None:
                        return bits + sub
        return None

    def _resolve(self, tid: int) -> int:
        while self.types[tid][0] in (8, 9, 10, 11, 18):  # typedef, volatile, const, ...
            tid = self.types[tid][3]
        return tid

    def enum(self, name: str) -> dict[int, str]:
        """An enum's values and names."""
        tid = self.by_name.get((6, name)) or self.by_name.get((19, name))
        if tid is None:
            return {}
        kind, _n, info, _s, at = self.types[tid]
        out: dict[int, str] = {}
        for i in range(info & 0xFFFF):
            if kind == 6:
                name_off, val = struct.unpack_from("<Ii", self.raw, at + 8 * i)
            else:
                name_off, lo, hi = struct.unpack_from("<III", self.raw, at + 12 * i)
                val = lo | (hi << 32)
            out[val] = self._str(name_off)
        return out


@functools.lru_cache(maxsize=1)
def btf() -> Btf | None:
    """The running kernel's BTF, or None if it has none."""
    try:
        return Btf()
    except (OSError, ValueError) as e:
        log.info("no kernel BTF: %s", e)
        return None


def drop_reasons() -> tuple[dict[int, str], str]:
    """The running kernel's drop reason names by number, and where they were read."""
    names = symbolic("skb:kfree_skb", "reason")
    if names:
        return names, "skb:kfree_skb format"
    b = btf()
    if b is not None:
        enum = b.enum("skb_drop_reason")
        if enum:
            return ({v: n.removeprefix("SKB_DROP_REASON_") for v, n in enum.items()},
                    "BTF enum skb_drop_reason")
    return {}, "nowhere (no tracepoint format and no BTF)"
