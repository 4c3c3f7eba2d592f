"""bpf(2) is called by number, and the number is the architecture's: 321 on x86_64 is
another syscall on arm64 (280). An architecture xlb does not know is refused at the
first call, with its name, rather than calling whatever that number is there."""

from __future__ import annotations

import glob
import platform
import re

import pytest

from xlb.dataplane import bpfsys
from xlb.errors import PlatformError


@pytest.mark.parametrize(("machine", "bits", "number"), [
    ("x86_64", 64, 321), ("aarch64", 64, 280), ("riscv64", 64, 280), ("ppc64le", 64, 361),
    ("s390x", 64, 351), ("i686", 32, 357), ("armv7l", 32, 386),
    ("x86_64", 32, 357), ("aarch64", 32, 386),  # a 32-bit process on a 64-bit kernel
])
def test_the_number_is_the_architectures(machine: str, bits: int, number: int) -> None:
    assert bpfsys.bpf_syscall_number(machine, bits // 8) == number


@pytest.mark.parametrize("machine", ["mips64", "sparc64", ""])
def test_an_unknown_architecture_is_refused_by_name(machine: str) -> None:
    with pytest.raises(PlatformError, match=f"bpf\\(2\\) syscall number of this architecture "
                                            f"\\({machine or 'unknown'}, 64-bit\\)"):
        bpfsys.bpf_syscall_number(machine, 8)


def test_every_call_uses_the_running_architectures_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No bpf(2) call goes out on an unknown architecture: the first one is refused."""
    calls: list[int] = []

    def syscall(nr: int, *args: object) -> int:
        calls.append(nr)
        return -1
    monkeypatch.setattr(platform, "machine", lambda: "sparc64")
    monkeypatch.setattr(bpfsys, "_sys_bpf", None, raising=False)
    monkeypatch.setattr(bpfsys._libc, "syscall", syscall)
    with pytest.raises(PlatformError, match="sparc64"):
        bpfsys.obj_get("/sys/fs/bpf/nothing-here")
    assert calls == []
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(bpfsys, "_sys_bpf", None, raising=False)
    with pytest.raises(OSError):
        bpfsys.obj_get("/sys/fs/bpf/nothing-here")
    assert calls == [280]


def _header_number(pattern: str) -> int | None:
    for path in glob.glob(pattern):
        with open(path) as f:
            m = re.search(r"#define __NR_bpf\s+(\d+)\b", f.read())
        if m:
            return int(m.group(1))
    return None


@pytest.mark.parametrize(("pattern", "machine", "bits"), [
    ("/usr/include/*/asm/unistd_64.h", "x86_64", 64),
    ("/usr/include/*/asm/unistd_32.h", "i686", 32),
    ("/usr/include/asm-generic/unistd.h", "aarch64", 64),
    ("/usr/include/asm-generic/unistd.h", "riscv64", 64),
    ("/usr/src/linux-headers-*/arch/arm64/include/asm/unistd32.h", "armv7l", 32),
])
def test_the_table_agrees_with_the_kernel_headers_here(pattern: str, machine: str,
                                                       bits: int) -> None:
    number = _header_number(pattern)
    if number is None:
        pytest.skip(f"no {pattern} on this machine")
    assert bpfsys.bpf_syscall_number(machine, bits // 8) == number
