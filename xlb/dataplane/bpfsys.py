"""The few bpf(2) commands xlb needs, called directly through ctypes.

BCC compiles and loads the programs; everything after that (reading and
writing pinned maps, test runs, program info) goes through these calls so a
reader such as `xlb status` never needs a compiler, and the byte layouts are
exactly the ctypes mirrors in structs.py.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
from collections.abc import Iterator
from typing import Any

import numpy as np

from xlb.errors import BpfError, PlatformError

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long

# __NR_bpf per architecture (platform.machine()), from the kernel's syscall tables:
# x86_64 asm/unistd_64.h, i386 asm/unistd_32.h, arm (and arm64's compat) unistd32.h, the
# asm-generic table that arm64, riscv and loongarch use, powerpc and s390 syscall.tbl.
SYS_BPF_BY_MACHINE = {
    "x86_64": 321, "amd64": 321,
    "i386": 357, "i486": 357, "i586": 357, "i686": 357,
    "aarch64": 280, "arm64": 280, "riscv64": 280, "loongarch64": 280,
    "armv6l": 386, "armv7l": 386, "armv8l": 386,
    "ppc64le": 361, "ppc64": 361, "ppc": 361,
    "s390x": 351,
}
# a 32-bit process on a 64-bit kernel calls the 32-bit table
_COMPAT_32 = {"x86_64": "i686", "amd64": "i686", "aarch64": "armv7l", "arm64": "armv7l"}


def bpf_syscall_number(machine: str | None = None, pointer_bytes: int | None = None) -> int:
    """The number of bpf(2) for this process: the kernel's architecture
    (platform.machine()) and the process's word size (a 32-bit Python on a 64-bit kernel
    uses the 32-bit table). An unknown architecture is refused: calling another
    syscall's number with a bpf attr would do something else entirely."""
    machine = platform.machine() if machine is None else machine
    if pointer_bytes is None:
        pointer_bytes = ctypes.sizeof(ctypes.c_void_p)
    key = _COMPAT_32.get(machine, machine) if pointer_bytes == 4 else machine
    try:
        return SYS_BPF_BY_MACHINE[key]
    except KeyError:
        raise PlatformError(
            f"xlb does not know the bpf(2) syscall number of this architecture "
            f"({machine or 'unknown'}, {pointer_bytes * 8}-bit); known: "
            f"{', '.join(sorted(SYS_BPF_BY_MACHINE))}") from None


_sys_bpf: int | None = None  # looked up at the first call: importing never fails

MAP_LOOKUP_ELEM = 1
MAP_UPDATE_ELEM = 2
MAP_DELETE_ELEM = 3
MAP_GET_NEXT_KEY = 4
OBJ_PIN = 6
OBJ_GET = 7
PROG_LOAD = 5
PROG_TEST_RUN = 10
PROG_GET_NEXT_ID = 11
PROG_GET_FD_BY_ID = 13
OBJ_GET_INFO_BY_FD = 15
ENABLE_STATS = 32
STATS_RUN_TIME = 0  # enum bpf_stats_type
MAP_LOOKUP_BATCH = 24
MAP_UPDATE_BATCH = 26
MAP_DELETE_BATCH = 27

BPF_ANY = 0


class _MapElemAttr(ctypes.Structure):
    _fields_ = [("map_fd", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("key", ctypes.c_uint64), ("value", ctypes.c_uint64),
                ("flags", ctypes.c_uint64)]


class _ObjAttr(ctypes.Structure):
    _fields_ = [("pathname", ctypes.c_uint64), ("bpf_fd", ctypes.c_uint32),
                ("file_flags", ctypes.c_uint32), ("path_fd", ctypes.c_int32)]


class _BatchAttr(ctypes.Structure):
    _fields_ = [("in_batch", ctypes.c_uint64), ("out_batch", ctypes.c_uint64),
                ("keys", ctypes.c_uint64), ("values", ctypes.c_uint64),
                ("count", ctypes.c_uint32), ("map_fd", ctypes.c_uint32),
                ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class _TestRunAttr(ctypes.Structure):
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class _InfoAttr(ctypes.Structure):
    _fields_ = [("bpf_fd", ctypes.c_uint32), ("info_len", ctypes.c_uint32),
                ("info", ctypes.c_uint64)]


class _IdAttr(ctypes.Structure):
    """For the GET_NEXT_ID and GET_FD_BY_ID commands."""

    _fields_ = [("id", ctypes.c_uint32), ("next_id", ctypes.c_uint32),
                ("open_flags", ctypes.c_uint32)]


class _Insn(ctypes.Structure):
    """struct bpf_insn (registers as one byte: only r0, which is 0)."""

    _fields_ = [("code", ctypes.c_uint8), ("regs", ctypes.c_uint8), ("off", ctypes.c_int16),
                ("imm", ctypes.c_int32)]


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16)]


PROG_TYPE_TRACEPOINT = 5  # enum bpf_prog_type


class _StatsAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32)]


class MapInfo(ctypes.Structure):
    """struct bpf_map_info (the leading fields xlb reads)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("key_size", ctypes.c_uint32), ("value_size", ctypes.c_uint32),
                ("max_entries", ctypes.c_uint32), ("map_flags", ctypes.c_uint32),
                ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to run_cnt (stable UAPI layout)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", ctypes.c_uint32),
                ("xlated_prog_len", ctypes.c_uint32), ("jited_prog_insns", ctypes.c_uint64),
                ("xlated_prog_insns", ctypes.c_uint64), ("load_time", ctypes.c_uint64),
                ("created_by_uid", ctypes.c_uint32), ("nr_map_ids", ctypes.c_uint32),
                ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
                ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64),
                ("btf_id", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("nr_func_info", ctypes.c_uint32),
                ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32),
                ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64)]


def _call(cmd: int, attr: ctypes.Structure, what: str) -> int:
    global _sys_bpf
    if _sys_bpf is None:
        _sys_bpf = bpf_syscall_number()
    ret = _libc.syscall(_sys_bpf, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"{what}: {os.strerror(err)}")
    return int(ret)


def _addr(obj: Any) -> int:
    return ctypes.addressof(obj)


def obj_get(path: str) -> int:
    """Open a pinned map or program; returns a new fd."""
    raw = path.encode()
    buf = ctypes.create_string_buffer(raw)
    attr = _ObjAttr(pathname=_addr(buf))
    return _call(OBJ_GET, attr, f"open pinned {path}")


def obj_pin(fd: int, path: str) -> None:
    buf = ctypes.create_string_buffer(path.encode())
    attr = _ObjAttr(pathname=_addr(buf), bpf_fd=fd)
    _call(OBJ_PIN, attr, f"pin {path}")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info))
    _call(OBJ_GET_INFO_BY_FD, attr, "map info")
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=_addr(info))
    _call(OBJ_GET_INFO_BY_FD, attr, "program info")
    return info


def prog_ids() -> Iterator[int]:
    """The id of every BPF program loaded on the host (BPF_PROG_GET_NEXT_ID)."""
    attr = _IdAttr()
    while True:
        try:
            _call(PROG_GET_NEXT_ID, attr, "next program id")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        yield int(attr.next_id)
        attr.id = attr.next_id


def prog_fd_by_id(prog_id: int) -> int:
    """Open a loaded program by its id (any program, xlb's or not): a new fd (BpfError
    ENOENT: it is gone)."""
    return _call(PROG_GET_FD_BY_ID, _IdAttr(id=prog_id), f"open program {prog_id}")


def prog_info_by_id(prog_id: int) -> ProgInfo | None:
    """A program's info by id, or None if it went away meanwhile."""
    try:
        fd = prog_fd_by_id(prog_id)
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    try:
        return prog_info(fd)
    finally:
        os.close(fd)


def enable_stats() -> int:
    """Turn on the kernel's BPF run-time statistics for as long as the returned fd is open
    (BPF_ENABLE_STATS): closing it, or the process ending, turns them off again."""
    return _call(ENABLE_STATS, _StatsAttr(type=STATS_RUN_TIME), "enable BPF run-time stats")


def trial_load(prog_type: int) -> None:
    """Load the smallest program of `prog_type` ("return 0") and close it at once: whether
    this process may load such programs here. BpfError (EPERM: it lacks a privilege)."""
    insns = (_Insn * 2)(_Insn(code=0xB7), _Insn(code=0x95))  # r0 = 0; exit
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = _ProgLoadAttr(prog_type=prog_type, insn_cnt=2, insns=_addr(insns),
                         license=_addr(license_), prog_name=b"xlb_trial")
    os.close(_call(PROG_LOAD, attr, "load a trial program"))


def lookup(fd: int, key: ctypes.Structure | ctypes._SimpleCData, value: Any) -> bool:
    """Fill `value` with the entry for `key`; False if there is none."""
    attr = _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value))
    try:
        _call(MAP_LOOKUP_ELEM, attr, "map lookup")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def update(fd: int, key: Any, value: Any, flags: int = BPF_ANY) -> None:
    attr = _MapElemAttr(map_fd=fd, key=_addr(key), value=_addr(value), flags=flags)
    _call(MAP_UPDATE_ELEM, attr, "map update")


def delete(fd: int, key: Any) -> bool:
    attr = _MapElemAttr(map_fd=fd, key=_addr(key))
    try:
        _call(MAP_DELETE_ELEM, attr, "map delete")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def keys(fd: int, key_type: type) -> Iterator[Any]:
    """Iterate a hash map's keys (the map may change meanwhile, as for any reader)."""
    cur = None
    while True:
        nxt = key_type()
        attr = _MapElemAttr(map_fd=fd, key=_addr(cur) if cur is not None else 0,
                            value=_addr(nxt))
        try:
            _call(MAP_GET_NEXT_KEY, attr, "map next key")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return
            raise
        yield nxt
        cur = nxt


def update_batch(fd: int, key_array: Any, value_array: Any, count: int) -> None:
    """Write `count` entries in one call (arrays: all Maglev entries at once)."""
    attr = _BatchAttr(keys=_addr(key_array), values=_addr(value_array), count=count,
                      map_fd=fd)
    _call(MAP_UPDATE_BATCH, attr, "map batch update")
    if attr.count != count:
        raise BpfError(errno.EIO, f"map batch update wrote {attr.count} of {count} entries")


def lookup_batch(fd: int, key_array: Any, value_array: Any, count: int, start: int = 0) -> int:
    """Read up to `count` entries of an array map from index `start`; returns how many.

    For arrays the batch cursor is the previous index, so `start - 1` resumes at `start`.
    """
    out = ctypes.c_uint64(0)
    cursor = ctypes.c_uint32(start - 1) if start > 0 else None
    attr = _BatchAttr(in_batch=_addr(cursor) if cursor is not None else 0,
                      out_batch=_addr(out), keys=_addr(key_array),
                      values=_addr(value_array), count=count, map_fd=fd)
    try:
        _call(MAP_LOOKUP_BATCH, attr, "map batch lookup")
    except BpfError as e:
        if e.errno != errno.ENOENT:  # ENOENT: reached the end, count says how many
            raise
    return int(attr.count)


def hash_batches(fd: int, key_size: int, value_size: int, count: int = 8192
                 ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every entry of a hash map, `count` at a time: (keys, values) as rows of bytes.

    The map may change meanwhile, as for any reader: an entry added or removed during the
    walk may or may not be seen. A bucket holding more than `count` entries doubles it.
    """
    keys = np.zeros(count * key_size, dtype=np.uint8)
    values = np.zeros(count * value_size, dtype=np.uint8)
    cursor, out = ctypes.c_uint64(0), ctypes.c_uint64(0)
    first = True
    while True:
        attr = _BatchAttr(in_batch=0 if first else _addr(cursor), out_batch=_addr(out),
                          keys=keys.ctypes.data, values=values.ctypes.data, count=count,
                          map_fd=fd)
        try:
            _call(MAP_LOOKUP_BATCH, attr, "map batch lookup")
            done = False
        except BpfError as e:
            if e.errno == errno.ENOSPC and attr.count == 0:  # one bucket holds more
                count *= 2
                keys = np.zeros(count * key_size, dtype=np.uint8)
                values = np.zeros(count * value_size, dtype=np.uint8)
                continue
            if e.errno != errno.ENOENT:  # ENOENT: the end, count says how many
                raise
            done = True
        n = int(attr.count)
        if n:
            yield (keys[: n * key_size].reshape(n, key_size).copy(),
                   values[: n * value_size].reshape(n, value_size).copy())
        if done:
            return
        cursor.value, first = out.value, False


def delete_batch(fd: int, keys: np.ndarray) -> int:
    """Delete the keys (rows of bytes) that are still there; returns how many were."""
    deleted = 0
    rows = np.ascontiguousarray(keys)
    while len(rows):
        attr = _BatchAttr(keys=rows.ctypes.data, count=len(rows), map_fd=fd)
        try:
            _call(MAP_DELETE_BATCH, attr, "map batch delete")
            return deleted + int(attr.count)
        except BpfError as e:
            if e.errno != errno.ENOENT:
                raise
        deleted += int(attr.count)  # the one after these is gone already: skip it
        rows = rows[int(attr.count) + 1:]
    return deleted


def test_run(prog_fd: int, packet: bytes, repeat: int = 1, out_size: int = 4096,
             ctx: ctypes.Structure | None = None) -> tuple[int, bytes, int]:
    """BPF_PROG_TEST_RUN: returns (action, packet out, mean ns per run)."""
    data_in = ctypes.create_string_buffer(packet, len(packet))
    data_out = ctypes.create_string_buffer(out_size)
    attr = _TestRunAttr(prog_fd=prog_fd, data_size_in=len(packet), data_size_out=out_size,
                        data_in=_addr(data_in), data_out=_addr(data_out), repeat=repeat)
    if ctx is not None:
        attr.ctx_in = _addr(ctx)
        attr.ctx_size_in = ctypes.sizeof(ctx)
    _call(PROG_TEST_RUN, attr, "test run")
    return int(attr.retval), data_out.raw[: attr.data_size_out], int(attr.duration)


def possible_cpus() -> int:
    """Per-CPU map values have one slot per *possible* CPU, not online CPU."""
    with open("/sys/devices/system/cpu/possible") as f:
        text = f.read().strip()
    total = 0
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        total += (int(hi) if hi else int(lo)) - int(lo) + 1
    return total
