"""Compile bpf/xlb.c with BCC and load it over one instance's pinned maps.

The maps are declared BPF_TABLE_PINNED: the first load creates and pins
them, a later load (a restarted agent, a new xlb version) reuses them, so the
connection table and counters survive. Before compiling over existing pins
we check they were made for the same geometry, because BCC would otherwise
silently reuse a map of another size.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict, dataclass

from xlb import resources
from xlb.dataplane import bpfsys
from xlb.dataplane import structs as S
from xlb.dataplane.maps import ADDED_LATER, SPECS, TRACE_EVENTS, PinnedMap, pin_dir
from xlb.errors import CompileError, LayoutError
from xlb.paths import PIN_ROOT

log = logging.getLogger(__name__)

PROG_PIN = "prog"
DEFAULT_TRACE_BUFFER = 1 << 20  # bytes; the [instance] setting trace_buffer_kib's default


@dataclass(frozen=True)
class Geometry:
    """Sizes compiled into the program and its maps; changing one needs --remove-pins.
    No defaults: they are the [instance] table's (xlb/schema.py)."""

    ring_size: int
    max_vips: int
    max_backends: int
    max_connections: int
    max_snat: int  # entries of snat_rev (instance.snat_entries)

    @property
    def ring_slots(self) -> int:
        # Two rings per VIP: a new table is written to a free slot and the VIP
        # flips to it in one map update, so no packet sees a half-written ring.
        return 2 * self.max_vips

    def cflags(self, pins: str) -> list[str]:
        return [
            f"-I{resources.data_dir('bpf')}",
            f'-DPIN_DIR="{pins}"',
            f"-DRING_SIZE={self.ring_size}u",
            f"-DRING_SLOTS={self.ring_slots}",
            f"-DMAX_VIPS={self.max_vips}",
            f"-DMAX_BACKENDS={self.max_backends}",
            f"-DMAX_CONNS={self.max_connections}",
            f"-DMAX_SNAT={self.max_snat}",
        ]

    def expected_entries(self) -> dict[str, int]:
        return {
            "meta": 1, "ctl": 1, "vips": self.max_vips, "vip_addrs": self.max_vips,
            "vip_index": 2 * S.XLB_VIP_INDEX_SLOTS,
            "rings": self.ring_slots * self.ring_size, "backends": self.max_backends,
            "conns": self.max_connections, "queue_stats": S.XLB_MAX_QUEUES,
            "vip_stats": self.max_vips, "backend_stats": self.max_backends,
            "reason_stats": S.XLB_MAX_REASONS, "flow_guard": 1,
            "miss_stats": S.XLB_MAX_MISSES, "trace_stats": 1,
            "snat_rev": self.max_snat, "snat_stats": self.max_vips,
        }


@dataclass
class Loaded:
    """A loaded program: its fd (owned by the BCC object kept alive here) and id."""

    instance: str
    prog_fd: int
    prog_id: int
    pin_dir: str
    geometry: Geometry
    adopted: bool
    _bpf: object = None


def check_pins(instance: str, geometry: Geometry, root: str = PIN_ROOT) -> bool:
    """True if pinned maps exist and fit `geometry`; raise LayoutError if they don't fit."""
    pins = pin_dir(instance, root)
    if not os.path.exists(os.path.join(pins, "meta")):
        return False
    expected = geometry.expected_entries()
    for name, spec in SPECS.items():
        path = os.path.join(pins, name)
        if not os.path.exists(path):
            if name in ADDED_LATER:
                continue  # made by an older xlb: the load creates it, the rest is adopted
            raise LayoutError(f"{pins} is incomplete (no {name}); unload with --remove-pins")
        m = PinnedMap(path, spec)
        try:
            if m.max_entries != expected[name]:
                raise LayoutError(
                    f"pinned map {path} has {m.max_entries} entries, this config needs "
                    f"{expected[name]} (geometry changed: {asdict(geometry)}); "
                    "unload with --remove-pins to rebuild, losing established flows")
            if name == "meta":
                meta = m.get(0)
                assert isinstance(meta, S.Meta)
                if meta.magic and (meta.magic != S.XLB_MAGIC
                                   or meta.layout_version != S.XLB_LAYOUT_VERSION):
                    raise LayoutError(
                        f"{path}: the pinned maps were made by another xlb (map layout "
                        f"version {meta.layout_version}, this xlb uses "
                        f"{S.XLB_LAYOUT_VERSION}); unload with --remove-pins and load "
                        "again (established flows are lost)")
        finally:
            m.close()
    return True


def trace_buffer_bytes(asked: int) -> int:
    """The trace ring buffer's size for `asked` bytes: the kernel wants a power of two
    and at least a page."""
    size = max(int(asked), os.sysconf("SC_PAGE_SIZE"))
    return 1 << (size - 1).bit_length()


def _fit_trace_buffer(pins: str, size: int) -> None:
    """Unpin a trace ring buffer of another size, so the load makes one of `size`: it
    holds nothing worth keeping (unlike the maps, which are refused when sizes differ)."""
    path = os.path.join(pins, TRACE_EVENTS)
    if not os.path.exists(path):
        return
    fd = bpfsys.obj_get(path)
    try:
        have = int(bpfsys.map_info(fd).max_entries)
    finally:
        os.close(fd)
    if have != size:
        log.info("trace ring buffer %s: %d bytes, now %d", path, have, size)
        os.unlink(path)


def load(instance: str, geometry: Geometry, root: str = PIN_ROOT,
         extra_cflags: tuple[str, ...] = (), trace_buffer: int = DEFAULT_TRACE_BUFFER
         ) -> Loaded:
    """Compile (about a second of clang), load, pin maps and program.

    trace_buffer: bytes of the flow-trace ring buffer (rounded up to a power of two, at
    least a page). extra_cflags is for the benchmark build (-DXLB_BENCH_RESTORE) only.
    """
    from bcc import BPF  # Debian's python3-bpfcc; imported late: readers never need it

    adopted = check_pins(instance, geometry, root)
    pins = pin_dir(instance, root)
    os.makedirs(pins, exist_ok=True)
    ring = trace_buffer_bytes(trace_buffer)
    _fit_trace_buffer(pins, ring)
    src = resources.data_dir("bpf") / "xlb.c"
    cflags = [*geometry.cflags(pins), f"-DTRACE_BUFFER={ring}u", *extra_cflags]
    try:
        bpf = BPF(src_file=str(src).encode(), cflags=cflags)
        fn = bpf.load_func(b"xlb_main", BPF.XDP)
    except Exception as e:
        raise CompileError(f"compiling/loading {src} failed: {e}") from e
    meta_map = PinnedMap(os.path.join(pins, "meta"), SPECS["meta"])
    try:
        meta = meta_map.get(0)
        assert isinstance(meta, S.Meta)
        if not meta.magic:
            meta_map.set(0, S.Meta(magic=S.XLB_MAGIC, layout_version=S.XLB_LAYOUT_VERSION,
                                   ring_size=geometry.ring_size, max_vips=geometry.max_vips,
                                   max_backends=geometry.max_backends,
                                   max_queues=S.XLB_MAX_QUEUES,
                                   max_connections=geometry.max_connections,
                                   max_snat=geometry.max_snat))
    finally:
        meta_map.close()
    pin_program(instance, fn.fd, root)
    info = bpfsys.prog_info(fn.fd)
    return Loaded(instance, fn.fd, int(info.id), pins, geometry, adopted, bpf)


def pin_program(instance: str, fd: int, root: str = PIN_ROOT) -> None:
    """Pin `fd` as the instance's program (the one xlb treats as its own on the hook)."""
    path = os.path.join(pin_dir(instance, root), PROG_PIN)
    if os.path.exists(path):
        os.unlink(path)
    bpfsys.obj_pin(fd, path)


def geometry_from_pins(instance: str, root: str = PIN_ROOT) -> Geometry:
    m = PinnedMap(os.path.join(pin_dir(instance, root), "meta"), SPECS["meta"])
    try:
        meta = m.get(0)
        assert isinstance(meta, S.Meta)
        return Geometry(meta.ring_size, meta.max_vips, meta.max_backends, meta.max_connections,
                        meta.max_snat)
    finally:
        m.close()


def remove_pins(instance: str, root: str = PIN_ROOT) -> bool:
    """Unpin everything of the instance (maps die with their last user)."""
    pins = pin_dir(instance, root)
    if not os.path.isdir(pins):
        return False
    shutil.rmtree(pins)
    return True
