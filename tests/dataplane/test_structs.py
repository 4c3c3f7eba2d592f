"""bpf/xlb_shared.h and xlb/dataplane/structs.py must describe the same bytes.

clang (through BCC) lays out every struct of the header; BCC turns each
map's key type into ctypes, which we compare field by field with the mirror.
The enum and the #define constants are compared by name and value.
"""

from __future__ import annotations

import ctypes
import re

import pytest

from xlb import resources
from xlb.dataplane import structs as S

HEADER = resources.data_dir("bpf") / "xlb_shared.h"


def _layout(t: type) -> list[tuple[str, int, int]]:
    return [(name, getattr(t, name).offset, getattr(t, name).size)
            for name, *_ in t._fields_]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def compiled() -> dict[str, type]:
    from bcc import BPF

    maps = "\n".join(f"BPF_HASH(m_{name}, struct {name}, u32, 1);" for name in S.MIRRORS)
    text = f'#include "{HEADER}"\n{maps}\n'
    b = BPF(text=text.encode())
    try:
        return {name: b[f"m_{name}".encode()].Key for name in S.MIRRORS}
    finally:
        b.cleanup()


@pytest.mark.parametrize("name", sorted(S.MIRRORS))
def test_struct_layout_matches_header(compiled: dict[str, type], name: str) -> None:
    c_type = compiled[name]
    mirror = S.MIRRORS[name]
    assert ctypes.sizeof(c_type) == ctypes.sizeof(mirror), name
    assert _layout(c_type) == _layout(mirror), name


def test_every_header_struct_is_mirrored() -> None:
    structs = set(re.findall(r"^struct (xlb_\w+) \{", HEADER.read_text(), re.M))
    assert structs == set(S.MIRRORS)


def test_reason_enum_matches() -> None:
    body = re.search(r"enum xlb_reason \{(.*?)\};", HEADER.read_text(), re.S)
    assert body
    names = re.findall(r"^\s*XLB_R_(\w+)", body.group(1), re.M)
    assert names[-1] == "MAX"
    assert names[:-1] == [r.name for r in S.Reason]
    assert list(range(len(S.Reason))) == [int(r) for r in S.Reason]
    assert len(S.Reason) <= S.XLB_MAX_REASONS  # reason_stats has a slot for each


def test_path_enum_matches() -> None:
    body = re.search(r"enum xlb_path \{(.*?)\};", HEADER.read_text(), re.S)
    assert body
    names = re.findall(r"^\s*XLB_PATH_(\w+)", body.group(1), re.M)
    assert names == [p.name for p in S.Path] + ["MAX"]
    assert list(range(len(S.Path))) == [int(p) for p in S.Path]


def test_miss_enum_matches() -> None:
    body = re.search(r"enum xlb_miss \{(.*?)\};", HEADER.read_text(), re.S)
    assert body
    names = re.findall(r"^\s*XLB_MISS_(\w+)", body.group(1), re.M)
    assert names == [m.name for m in S.Miss] + ["MAX"]
    assert list(range(len(S.Miss))) == [int(m) for m in S.Miss]
    assert len(S.Miss) <= S.XLB_MAX_MISSES  # miss_stats has a slot for each


@pytest.mark.parametrize("name", ["XLB_MAGIC", "XLB_LAYOUT_VERSION", "XLB_MAX_QUEUES",
                                  "XLB_NUM_ACTIONS", "XLB_NO_BACKEND", "XLB_AF_INET",
                                  "XLB_AF_INET6", "XLB_BACKEND_VALID",
                                  "XLB_ACTIVE_EPOCH_SHIFT", "XLB_MAX_REASONS",
                                  "XLB_MAX_MISSES", "XLB_NO_VIP", "XLB_TRACE_OFF",
                                  "XLB_TRACE_ON", "XLB_TF_SRC", "XLB_TF_DST", "XLB_TF_HOST",
                                  "XLB_TF_SPORT", "XLB_TF_DPORT", "XLB_TF_PORT", "XLB_TF_PROTO",
                                  "XLB_TF_VIP", "XLB_TF_BACKEND", "XLB_TF_ALL", "XLB_MODE_DSR",
                                  "XLB_MODE_SNAT", "XLB_VIP_F_SNAT", "XLB_CONN_F_CLOSING",
                                  "XLB_SNAT_PROBES", "XLB_VIP_INDEX_SLOTS",
                                  "XLB_VIP_INDEX_MAX_KEYS"])
def test_constants_match(name: str) -> None:
    m = re.search(rf"^#define {name}\s+(0x[0-9a-fA-F]+|\d+)u?\b", HEADER.read_text(), re.M)
    assert m, name
    assert int(m.group(1), 0) == getattr(S, name)
