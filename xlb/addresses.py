"""One spelling of an IP address, for everything that compares addresses.

People write the same address in many ways: `FD00:5F1B:18:2::11`, the uncompressed
`fd00:5f1b:18:2:0:0:0:11`, `fd00:5f1b:0018:0002::0011`. The config, the agent and the CLI
compare addresses only in their canonical text (`ipaddress`: lower case, RFC 5952 for
IPv6), so every spelling finds the same backend. Scope ids (`fe80::1%eth0`) are refused:
they would not survive the trip into a BPF map.

Pure Python (the API client and the CLI's parser import it).
"""

from __future__ import annotations

import ipaddress

from xlb.errors import InvalidParams

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(value: str) -> IPAddress | None:
    """`value` as an address, or None if it is not one (or has a scope id)."""
    if "%" in value:
        return None
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def canonical_address(value: str) -> str:
    """The canonical text of address `value`; InvalidParams if it is not an address."""
    addr = parse_address(value)
    if addr is None:
        shown = value if len(value) <= 45 else value[:42] + "..."
        raise InvalidParams(f"{shown!r} is not an IP address")
    return str(addr)


def host_port(addr: str, port: int | None) -> str:
    """An address and port as people write them: 10.0.0.1:80, [fd00::1]:80; without a
    port (None: the protocol has none), the address alone."""
    host = f"[{addr}]" if ":" in addr else addr
    return host if port is None else f"{host}:{port}"
