"""`xlb explain`: the endpoints it reads (brackets for IPv6), clear usage errors for bad
input before any agent is asked, what it sends the agent, and one step per line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from xlb import cli
from xlb.api import protocol as P
from xlb.cli import explain as X
from xlb.errors import InvalidParams


@pytest.mark.parametrize(("text", "required", "want"), [
    ("198.18.0.7:40000", False, ("198.18.0.7", 40000)),
    ("198.18.0.7", False, ("198.18.0.7", None)),
    ("[FD00:5F1B:18::7]:80", True, ("fd00:5f1b:18::7", 80)),
    ("[fd00::7]", False, ("fd00::7", None)),
    ("fd00::7", False, ("fd00::7", None)),  # a bare IPv6 address has no port
    ("10.0.0.1:0", True, ("10.0.0.1", 0)),
])
def test_endpoints(text: str, required: bool, want: tuple[str, int | None]) -> None:
    assert X.endpoint(text, required) == want


@pytest.mark.parametrize(("argv", "message"), [
    (["web", "10.0.0.1:80"], "'web' is not an IP address"),
    (["198.18.0.7", "10.0.0.1"], "'10.0.0.1': the destination needs its port: 10.0.0.1:PORT"),
    (["198.18.0.7", "fd00::1:80"], "the destination needs its port: [fd00::1:80]:PORT"),
    (["198.18.0.7:99999", "10.0.0.1:80"], "'99999' in '198.18.0.7:99999' is not a port"),
    (["198.18.0.7:http", "10.0.0.1:80"], "'http' in '198.18.0.7:http' is not a port"),
    (["198.18.0.7", "[fd00::1:80"], "'[fd00::1:80': expected [IPv6]:PORT"),
    (["198.18.0.7", "10.0.0.1:80", "icmp"], "invalid choice: 'icmp'"),
])
def test_bad_input_is_a_usage_error_naming_it(argv: list[str], message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["explain", *argv, "--socket", str(tmp_path / "none.sock")])
    assert e.value.code == 2
    assert message in capsys.readouterr().err


class FakeClient:
    """Stands in for the agent client: records the call and answers `answer`."""

    def __init__(self, answer: dict[str, Any]):
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __enter__(self) -> FakeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        P.METHODS[method].check(params)  # what the agent would accept
        self.calls.append((method, params))
        return self.answer


ANSWER: P.Explain = {
    "flow": "198.18.0.7:40000 -> 198.18.1.10:80/tcp", "vip": "web", "backend": "198.18.2.11",
    "path": "conn", "reason": "tx_encap", "action": "TX", "hash": 1, "slot": None,
    "outer_src": "172.16.0.1", "connection_age": 2.0,
    "steps": [{"step": "vip", "text": "198.18.1.10 is a VIP address"},
              {"step": "verdict", "text": "TX, tx_encap: balanced"}]}


def test_it_asks_the_agent_and_prints_a_step_per_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient(dict(ANSWER))
    monkeypatch.setattr("xlb.cli.common.client", lambda args: fake)
    assert cli.main(["explain", "198.18.0.7:40000", "198.18.1.10:80", "--syn"]) == 0
    assert fake.calls == [("explain", {"src": "198.18.0.7", "sport": 40000,
                                       "dst": "198.18.1.10", "dport": 80, "protocol": "tcp",
                                       "syn": True, "length": None})]
    assert capsys.readouterr().out == ("198.18.0.7:40000 -> 198.18.1.10:80/tcp\n"
                                       "  vip         198.18.1.10 is a VIP address\n"
                                       "  verdict     TX, tx_encap: balanced\n")
    assert cli.main(["explain", "[fd00::7]", "[fd00::10]:53", "udp", "--json"]) == 0
    assert fake.calls[-1][1] == {"src": "fd00::7", "sport": None, "dst": "fd00::10",
                                 "dport": 53, "protocol": "udp", "syn": False, "length": None}
    assert capsys.readouterr().out.startswith('{\n  "flow"')


def test_the_api_checks_its_parameters() -> None:
    m = P.METHODS["explain"]
    assert not m.operator  # read-only users may ask
    assert m.check({"src": "FD00::7", "dst": "fd00::10", "dport": 53}) == {
        "src": "fd00::7", "sport": None, "dst": "fd00::10", "dport": 53, "protocol": "tcp",
        "syn": False, "length": None}
    for params, text in (({"src": "x", "dst": "10.0.0.1", "dport": 1}, "'x' is not an IP"),
                         ({"src": "10.0.0.2", "dst": "10.0.0.1", "dport": 70000},
                          "'dport' must be 0..65535"),
                         ({"src": "10.0.0.2", "dst": "10.0.0.1", "dport": 1,
                           "protocol": "icmp"}, "'icmp' is not tcp or udp"),
                         ({"src": "10.0.0.2", "dst": "10.0.0.1", "dport": 1, "length": 5},
                          "'length' must be 20..65535")):
        with pytest.raises(InvalidParams, match=text):
            m.check(params)
