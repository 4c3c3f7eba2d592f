"""The trace filter language (xlb/trace/filter.py): the issue's examples, errors that point
at the offending word, and properties: canonical text round-trips, garbage only ever
raises FilterError, and matches() agrees with a plain reference on random events."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from xlb.errors import ExitCode, InvalidParams
from xlb.trace.filter import KEYWORDS, MAX_SAMPLE, Filter, FilterError, parse

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network


def test_the_examples_of_the_issue() -> None:
    assert parse("src 198.18.0.0/24 and dport 80") == Filter(src=V4("198.18.0.0/24"), dport=80)
    assert parse("host fd00:5f1b:18::12") == Filter(host=V6("fd00:5f1b:18::12/128"))
    assert parse("proto udp") == parse("udp") == parse("UDP") == Filter(proto="udp")
    assert parse("vip web") == Filter(vip="web")
    assert parse("backend 198.18.2.11") == Filter(
        backend=ipaddress.ip_address("198.18.2.11"))
    assert parse("sample 100") == Filter(sample=100)
    assert parse("") == parse("  \t ") == Filter()


def test_canonical_text() -> None:
    f = parse("  sample 10   AND tcp and dst 10.1.0.0/16 and backend FD00::0001 and vip Web "
              "and port 53 and src 10.2.3.4/32 and host 10.9.0.0/255.255.0.0")
    assert str(f) == ("src 10.2.3.4 and dst 10.1.0.0/16 and host 10.9.0.0/16 and port 53 "
                      "and proto tcp and vip Web and backend fd00::1 and sample 10")
    assert str(parse("")) == "" and str(parse("sample 1")) == ""
    assert parse("host 2001:db8::/32").family == 6 and parse("tcp").family is None


@pytest.mark.parametrize(("text", "position", "message"), [
    ("src foo", 4, "expected a prefix or an address after 'src', got 'foo'"),
    ("src", 3, "expected a prefix or an address after 'src', got the end of the filter"),
    ("src 10.0.0.0/8 dst 10.1.0.0/16", 15, "expected 'and' after 'src 10.0.0.0/8', got 'dst'"),
    ("tcp and src 10.0.0.0/8 and src 10.1.0.0/16", 27,
     "'src' given twice ('src 10.0.0.0/8', then 'src 10.1.0.0/16')"),
    ("tcp and proto udp", 8, "'proto' given twice ('tcp', then 'proto udp')"),
    ("src 10.0.0.0/8 and dst 2001:db8::/32", 23,
     "'dst 2001:db8::/32' is IPv6 but 'src 10.0.0.0/8' is IPv4: a packet's addresses are of "
     "one family"),
    ("host 10.0.0.5/8", 5, "'10.0.0.5/8' has host bits set: did you mean 10.0.0.0/8?"),
    ("dport http", 6, "expected a port number 0..65535 after 'dport', got 'http'"),
    ("port 65536", 5, "expected a port number 0..65535 after 'port', got '65536'"),
    ("sport ²", 6, "expected a port number 0..65535 after 'sport', got '²'"),
    ("proto icmp", 6, "expected tcp or udp after 'proto', got 'icmp'"),
    ("backend 10.0.0.0/8", 8, "expected a backend address after 'backend', got '10.0.0.0/8'"),
    ("backend fe80::1%eth0", 8,
     "expected a backend address after 'backend', got 'fe80::1%eth0'"),
    ("sample 0", 7, f"expected a number 1..{MAX_SAMPLE} after 'sample', got '0'"),
    ("vip", 3, "expected a VIP name after 'vip', got the end of the filter"),
    ("tcp and", 7, "expected a term after 'and', got the end of the filter"),
    ("and tcp", 0, f"expected a term ({', '.join(KEYWORDS)}), got 'and'"),
    ("dst 10.0.0.1 or src 10.0.0.2", 13, "expected 'and' after 'dst 10.0.0.1', got 'or'"),
])
def test_errors_point_at_the_word_and_say_what_was_expected(text: str, position: int,
                                                             message: str) -> None:
    with pytest.raises(FilterError) as e:
        parse(text)
    assert (e.value.position, e.value.message) == (position, message)
    assert str(e.value) == f"bad filter: {message} (column {position + 1})"
    assert isinstance(e.value, InvalidParams)  # the API: invalid params
    assert e.value.exit_code == ExitCode.USAGE  # the CLI: a usage error


def test_the_caret_sits_under_the_word() -> None:
    with pytest.raises(FilterError) as e:
        parse("src 10.0.0.0/8 and dport www")
    assert e.value.caret() == "src 10.0.0.0/8 and dport www\n" + " " * 25 + "^"


def test_long_words_are_shortened_in_messages() -> None:
    with pytest.raises(FilterError) as e:
        parse("vip web and " + "x" * 500)
    assert len(str(e.value)) < 200 and "xxx..." in str(e.value)


# -- properties ------------------------------------------------------------------------------
def networks(version: int) -> st.SearchStrategy[V4 | V6]:
    bits = 32 if version == 4 else 128
    return st.builds(lambda a, n: ipaddress.ip_network((a, n), strict=False),
                     st.integers(0, 2**bits - 1).map(
                         ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address),
                     st.integers(0, bits))


addresses = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                      st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
ports = st.integers(0, 65535)
names = st.text(st.characters(codec="utf-8", exclude_categories=("Z", "C")), min_size=1,
                max_size=20)


@st.composite
def filters(draw: st.DrawFn) -> Filter:
    version = draw(st.sampled_from((4, 6)))

    def maybe(s: st.SearchStrategy[Any]) -> Any:
        return draw(st.none() | s)

    return Filter(src=maybe(networks(version)), dst=maybe(networks(version)),
                  host=maybe(networks(version)), sport=maybe(ports), dport=maybe(ports),
                  port=maybe(ports), proto=maybe(st.sampled_from(("tcp", "udp"))),
                  vip=maybe(names), backend=maybe(addresses),
                  sample=draw(st.integers(1, MAX_SAMPLE)))


@given(filters())
@settings(max_examples=500)
def test_canonical_text_round_trips(f: Filter) -> None:
    assert parse(str(f)) == f
    assert str(parse(str(f))) == str(f)


@given(st.lists(st.sampled_from((*KEYWORDS, "and", "AND", "Src", "10.0.0.0/8", "10.0.0.5/8",
                                 "2001:db8::/32", "fd00::1", "80", "0", "65536", "-1", "web",
                                 "x", "/", "::", "1.2.3.4/33", "", "tcp", "or", "%")),
                max_size=12),
       st.lists(st.sampled_from((" ", "  ", "\t", "\n", " \u00a0")), min_size=13, max_size=13))
@settings(max_examples=1000)
def test_word_soup_parses_or_fails_pointing_at_a_word(words: list[str],
                                                      gaps: list[str]) -> None:
    text = gaps[0] + "".join(w + g for w, g in zip(words, gaps[1:], strict=False))
    check_outcome(text)


@given(st.text(max_size=80))
@settings(max_examples=1000)
@example("src 10.0.0.0/8 and and")
@example("\x00")
def test_garbage_only_ever_raises_filter_error(text: str) -> None:
    check_outcome(text)


def check_outcome(text: str) -> None:
    """Parsed (and then its canonical text parses to the same), or a FilterError whose
    position is the start of a word or the end of the text."""
    try:
        f = parse(text)
    except FilterError as e:
        p = e.position
        assert 0 <= p <= len(text)
        assert p == len(text) or (not text[p].isspace() and (p == 0 or text[p - 1].isspace()))
        assert ("the end of the filter" in e.message) == (p == len(text))
        return
    assert parse(str(f)) == f


@st.composite
def filter_and_event(draw: st.DrawFn) -> tuple[Filter, dict[str, Any]]:
    """A filter, and an event that often meets some of its terms (drawn from them)."""
    f = draw(filters())
    version = f.family or draw(st.sampled_from((4, 6)))
    cls = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    bits = 32 if version == 4 else 128

    def address_near(net: V4 | V6 | None) -> str:
        if net is not None and draw(st.booleans()):
            return str(net.network_address + draw(st.integers(0, net.num_addresses - 1)))
        return str(cls(draw(st.integers(0, 2**bits - 1))))

    def port_near(*want: int | None) -> int:
        options = [p for p in want if p is not None]
        near: bool = draw(st.booleans())
        if options and near:
            return draw(st.sampled_from(options))
        return draw(ports)

    ev = {"source": "xdp", "time": 0.0, "cpu": 0, "queue": 0, "interface": "eth0",
          "protocol": draw(st.sampled_from(("tcp", "udp", "icmp", f.proto or "tcp"))),
          "src": address_near(f.src or f.host), "sport": port_near(f.sport, f.port),
          "dst": address_near(f.dst or f.host), "dport": port_near(f.dport, f.port),
          "vip": draw(st.sampled_from((None, "other", f.vip))),
          "backend": draw(st.sampled_from((None, str(f.backend) if f.backend else None,
                                           "10.0.0.1", "fd00::1"))),
          "path": "maglev", "action": "TX", "reason": "tx_encap", "length": 60,
          "outer_src": None}
    return f, ev


def reference(f: Filter, ev: dict[str, Any]) -> bool:
    """Straightforward: every term given must hold, compared as integers and strings."""
    def inside(text: str | None, net: V4 | V6) -> bool:
        if text is None:
            return False
        a = ipaddress.ip_address(text)
        return a.version == net.version and (
            int(net.network_address) <= int(a) <= int(net.broadcast_address))

    checks = [
        f.src is None or inside(ev["src"], f.src),
        f.dst is None or inside(ev["dst"], f.dst),
        f.host is None or inside(ev["src"], f.host) or inside(ev["dst"], f.host),
        f.sport is None or ev["sport"] == f.sport,
        f.dport is None or ev["dport"] == f.dport,
        f.port is None or f.port in (ev["sport"], ev["dport"]),
        f.proto is None or ev["protocol"] == f.proto,
        f.vip is None or ev["vip"] == f.vip,
        f.backend is None or (ev["backend"] is not None
                              and ipaddress.ip_address(ev["backend"]) == f.backend),
    ]
    return all(checks)


@given(filter_and_event())
@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
def test_matches_agrees_with_a_reference(fe: tuple[Filter, dict[str, Any]]) -> None:
    f, ev = fe
    assert f.matches(ev) == reference(f, ev)


def test_matches_on_concrete_events() -> None:
    ev = {"src": "198.18.0.7", "sport": 40000, "dst": "10.100.0.10", "dport": 80,
          "protocol": "tcp", "vip": "web", "backend": "10.0.1.2"}
    yes = ["", "src 198.18.0.0/24 and dport 80", "host 10.100.0.10", "port 40000",
           "tcp and vip web", "backend 10.0.1.2", "sample 100", "dst 0.0.0.0/0"]
    no = ["src 198.18.1.0/24", "host 2001:db8::/32", "dport 81", "udp", "vip api",
          "backend 10.0.1.3", "sport 80", "dst ::/0"]
    assert [t for t in yes if not parse(t).matches(ev)] == []
    assert [t for t in no if parse(t).matches(ev)] == []
    assert not parse("backend 10.0.1.2").matches({**ev, "backend": None})
