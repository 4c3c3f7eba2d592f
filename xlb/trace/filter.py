"""The filter language of flow traces: one grammar for the CLI, the API and the console.

tcpdump/pwru-like terms joined by `and` (README, "The filter language"):

    filter  :=  ""  |  term ("and" term)*
    term    :=  (src | dst | host) PREFIX-or-ADDRESS      host: source or destination
             |  (sport | dport | port) PORT               port: source or destination
             |  proto (tcp | udp)  |  tcp  |  udp
             |  vip NAME                                   a VIP by its name
             |  backend ADDRESS                            the chosen backend
             |  sample N                                   1 in N of the matching packets

Each term at most once; src, dst and host of one family (a packet has one). Keywords
and protocols are case-insensitive. The empty filter matches every packet.

`parse` is the only way in: a bad expression raises FilterError, which points at the
offending word (its character offset) and says what was expected, so nothing is
started on a typo. `str(Filter)` is the canonical text (`parse(str(f)) == f`), which
the agent shows and records. `Filter.matches` decides in Python (kernel-drop events,
tests); the data plane matches the same fields itself. Pure Python: no data plane.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from xlb.addresses import IPAddress, parse_address
from xlb.errors import ExitCode, InvalidParams

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Protocol = Literal["tcp", "udp"]
PROTOCOLS: tuple[Protocol, ...] = ("tcp", "udp")
MAX_PORT = 65535
MAX_SAMPLE = 1_000_000  # 1 in N: beyond this a trace shows next to nothing
PREFIX_TERMS = ("src", "dst", "host")
PORT_TERMS = ("sport", "dport", "port")
KEYWORDS = (*PREFIX_TERMS, *PORT_TERMS, "proto", *PROTOCOLS, "vip", "backend", "sample")

_WORD = re.compile(r"\S+")
_NUMBER = re.compile(r"[0-9]{1,8}")  # ASCII digits only ('²'.isdigit() is True)
_SHOWN = 40  # characters of an offending word quoted in a message


class FilterError(InvalidParams):
    """A filter that cannot be parsed: `position` is the character offset (0-based) of
    the offending word in `text` (len(text) when something is missing at the end), and
    the message quotes the word and says what was expected. An InvalidParams: the API
    answers it as invalid params; the CLI, which parses before it asks, exits with a usage
    error."""

    exit_code = ExitCode.USAGE

    def __init__(self, text: str, position: int, message: str) -> None:
        self.text = text
        self.position = position
        self.message = message
        super().__init__(f"bad filter: {message} (column {position + 1})")

    def caret(self) -> str:
        """The filter with a caret under the offending word, for a terminal."""
        return f"{self.text}\n{' ' * self.position}^"


@dataclass(frozen=True)
class Filter:
    """Which packets a trace keeps; None = any. Build it with parse(): constructing one
    directly does not check it."""

    src: Network | None = None
    dst: Network | None = None
    host: Network | None = None
    sport: int | None = None
    dport: int | None = None
    port: int | None = None
    proto: Protocol | None = None
    vip: str | None = None
    backend: IPAddress | None = None
    sample: int = 1

    def __str__(self) -> str:
        terms = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or (f.name == "sample" and value == 1):
                continue
            if f.name in PREFIX_TERMS:
                value = _prefix_text(value)
            terms.append(f"{f.name} {value}")
        return " and ".join(terms)

    @property
    def family(self) -> int | None:
        """4 or 6 if src, dst or host ask for one family, else None."""
        for net in (self.src, self.dst, self.host):
            if net is not None:
                return net.version
        return None

    def matches(self, ev: Mapping[str, Any]) -> bool:
        """Whether a TraceEvent (xlb.api.protocol) passes every term; `sample` is not a
        condition on one packet and is not looked at here."""
        src, dst = parse_address(ev["src"]), parse_address(ev["dst"])
        if self.src is not None and not _within(src, self.src):
            return False
        if self.dst is not None and not _within(dst, self.dst):
            return False
        if self.host is not None and not (_within(src, self.host)
                                          or _within(dst, self.host)):
            return False
        if self.sport is not None and ev["sport"] != self.sport:
            return False
        if self.dport is not None and ev["dport"] != self.dport:
            return False
        if self.port is not None and self.port not in (ev["sport"], ev["dport"]):
            return False
        if self.proto is not None and ev["protocol"] != self.proto:
            return False
        if self.vip is not None and ev["vip"] != self.vip:
            return False
        if self.backend is not None:
            chosen = ev["backend"]
            if chosen is None or parse_address(chosen) != self.backend:
                return False
        return True


def _within(addr: IPAddress | None, net: Network) -> bool:
    return addr is not None and addr.version == net.version and addr in net


def _prefix_text(net: Network) -> str:
    """A prefix as written canonically: a single address without its /32 or /128."""
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _show(word: str) -> str:
    return repr(word if len(word) <= _SHOWN else word[:_SHOWN] + "...")


class _Parser:
    """One pass over the words of a filter, each with its character offset."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = [(m.group(), m.start()) for m in _WORD.finditer(text)]
        self.i = 0
        self.values: dict[str, Any] = {}
        self.given: dict[str, str] = {}  # field -> its term as written, for messages

    def fail(self, position: int, message: str) -> FilterError:
        return FilterError(self.text, position, message)

    def take(self) -> tuple[str | None, int]:
        """The next word and its offset; (None, len(text)) at the end."""
        if self.i >= len(self.words):
            return None, len(self.text)
        word, pos = self.words[self.i]
        self.i += 1
        return word, pos

    def value(self, keyword: str, what: str) -> tuple[str, int]:
        word, pos = self.take()
        if word is None:
            raise self.fail(pos, f"expected {what} after {keyword!r}, got the end of the filter")
        return word, pos

    def parse(self) -> Filter:
        while True:
            word, pos = self.take()
            if word is None:
                if self.values:  # only after 'and': an empty filter is fine
                    raise self.fail(pos, "expected a term after 'and', got the end of the "
                                         "filter")
                break
            self.term(word, pos)
            word, pos = self.take()
            if word is None:
                break
            if word.lower() != "and":
                last = self.given[next(reversed(self.given))]
                raise self.fail(pos, f"expected 'and' after {last!r}, got {_show(word)}")
        return Filter(**self.values)

    def term(self, word: str, pos: int) -> None:
        keyword = word.lower()
        if keyword not in KEYWORDS:
            raise self.fail(pos, f"expected a term ({', '.join(KEYWORDS)}), "
                                 f"got {_show(word)}")
        if keyword in PROTOCOLS:
            self.put("proto", keyword, pos, keyword)
        elif keyword in PREFIX_TERMS:
            self.prefix(keyword, pos)
        elif keyword in PORT_TERMS:
            text, at = self.value(keyword, f"a port number 0..{MAX_PORT}")
            self.put(keyword, self.number(keyword, text, at, 0, MAX_PORT, "a port number"),
                     pos, f"{keyword} {text}")
        elif keyword == "proto":
            text, at = self.value(keyword, "tcp or udp")
            if text.lower() not in PROTOCOLS:
                raise self.fail(at, f"expected tcp or udp after 'proto', got {_show(text)}")
            self.put("proto", text.lower(), pos, f"proto {text.lower()}")
        elif keyword == "vip":
            text, _ = self.value(keyword, "a VIP name")
            self.put("vip", text, pos, f"vip {text}")
        elif keyword == "backend":
            text, at = self.value(keyword, "a backend address")
            addr = parse_address(text)
            if addr is None:
                raise self.fail(at, f"expected a backend address after 'backend', got "
                                    f"{_show(text)}")
            self.put("backend", addr, pos, f"backend {addr}")
        else:  # sample
            text, at = self.value(keyword, f"a number 1..{MAX_SAMPLE}")
            self.put("sample", self.number(keyword, text, at, 1, MAX_SAMPLE, "a number"),
                     pos, f"sample {text}")

    def put(self, name: str, value: Any, pos: int, written: str) -> None:
        if name in self.values:
            raise self.fail(pos, f"{name!r} given twice ({self.given[name]!r}, then "
                                 f"{written!r})")
        self.values[name] = value
        self.given[name] = written

    def number(self, keyword: str, text: str, at: int, lo: int, hi: int, what: str) -> int:
        n = int(text) if _NUMBER.fullmatch(text) else -1
        if not lo <= n <= hi:
            raise self.fail(at, f"expected {what} {lo}..{hi} after {keyword!r}, "
                                f"got {_show(text)}")
        return n

    def prefix(self, keyword: str, pos: int) -> None:
        text, at = self.value(keyword, "a prefix or an address")
        net = _network(text)
        if net is None:
            raise self.fail(at, f"expected a prefix or an address after {keyword!r}, "
                                f"got {_show(text)}")
        if isinstance(net, str):
            raise self.fail(at, f"{_show(text)} has host bits set: did you mean {net}?")
        for other in PREFIX_TERMS:
            o = self.values.get(other)
            if o is not None and o.version != net.version:
                raise self.fail(at, f"'{keyword} {_prefix_text(net)}' is IPv{net.version} "
                                    f"but {self.given[other]!r} is IPv{o.version}: a packet's "
                                    "addresses are of one family")
        self.put(keyword, net, pos, f"{keyword} {_prefix_text(net)}")


def _network(text: str) -> Network | str | None:
    """The prefix `text` names; its proper spelling (a str) if host bits are set; None
    if it is no prefix at all."""
    if "%" in text:  # scope ids cannot be matched in the data plane
        return None
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        pass
    try:
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        return None


def parse(text: str) -> Filter:
    """The filter `text` stands for; FilterError points at what is wrong."""
    return _Parser(text).parse()
