"""One spelling of an address: the protocol's parameters, the agent's lookups and the CLI's
arguments all take any spelling and compare the canonical one; a non-address is invalid
params (-32602) with a clear message, or a usage error on the command line."""

from __future__ import annotations

import pytest

from xlb import cli
from xlb.addresses import canonical_address
from xlb.api import protocol as P
from xlb.cli.backend import backend_arg
from xlb.errors import InvalidParams, UsageError

V6 = "fd00:5f1b:18:2::11"


@pytest.mark.parametrize("spelling", ["FD00:5F1B:18:2::11", "fd00:5f1b:18:2:0:0:0:11",
                                      "fd00:5f1b:0018:0002:0000:0000:0000:0011", V6])
def test_every_spelling_has_one_canonical_text(spelling: str) -> None:
    assert canonical_address(spelling) == V6
    assert P.METHODS["drain"].check({"address": spelling})["address"] == V6
    args = cli.build_parser().parse_args(["drain", spelling, "--yes"])
    assert args.address == V6
    assert backend_arg(f"[{spelling}]:3") == {"address": V6, "weight": 3}


@pytest.mark.parametrize("bad", ["not-an-ip", "10.0.1.256", "010.0.1.1", "fe80::1%eth0", "",
                                 "1" * 100])
def test_a_non_address_is_invalid_params(bad: str) -> None:
    with pytest.raises(InvalidParams, match="is not an IP address") as e:
        canonical_address(bad)
    assert e.value.rpc_code == -32602 and len(str(e.value)) < 80
    others = {"vip": "web", "weight": 1, "name": "x", "port": 1, "protocol": "tcp"}
    for method in ("drain", "undrain", "weight", "add_backend", "remove_backend", "add_vip"):
        m = P.METHODS[method]
        params = {p.name: others[p.name] for p in m.params if p.required and p.name in others}
        with pytest.raises(InvalidParams, match=f"^{method}: parameter 'address': "):
            m.check({**params, "address": bad})
    with pytest.raises(UsageError, match="is not an IP address"):
        backend_arg(bad)


@pytest.mark.parametrize("line", [["drain", "not-an-ip", "--yes"], ["undrain", "x"],
                                  ["weight", "x", "2"], ["backend", "add", "x", "--vip", "web"],
                                  ["backend", "remove", "x", "--vip", "web", "--yes"],
                                  ["vip", "add", "api", "x", "80", "tcp"]])
def test_the_cli_refuses_a_non_address_before_asking_the_agent(
        line: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main([*line, "--socket", "/nonexistent/agent.sock"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "is not an IP address" in err and "Traceback" not in err
