"""The probe layer without a kernel: reading reason names out of a tracepoint format,
the kernel's BTF (readable by anyone), the [probes] settings, the API's probe names,
and the manager's bookkeeping (states, reasons, the auto cost limit) over stub probes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from xlb.api import protocol as P
from xlb.errors import ConfigError, InvalidParams, RefusedError
from xlb.probes import kernel
from xlb.probes.base import Probe, Spec, Unavailable
from xlb.probes.manager import ProbeManager
from xlb.probes.settings import ProbeSettings

FORMAT = '''name: kfree_skb
print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, \
"NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 0x10, "IP_CSUM" }, { 130, "MAX" })
'''


def test_reason_names_come_from_the_format_text() -> None:
    assert kernel.parse_symbolic(FORMAT, "reason") == {
        2: "NOT_SPECIFIED", 3: "NO_SOCKET", 16: "IP_CSUM", 130: "MAX"}
    assert kernel.parse_symbolic(FORMAT, "state") == {}


@pytest.mark.skipif(not os.access(kernel.BTF_PATH, os.R_OK), reason="no readable kernel BTF")
def test_btf_gives_sk_buff_offsets_and_the_drop_reason_enum() -> None:
    b = kernel.Btf()
    head, nh = b.member_offset("sk_buff", "head"), b.member_offset("sk_buff", "network_header")
    assert 0 < nh < head < 512  # network_header sits in an anonymous struct group
    with pytest.raises(KeyError, match="no member"):
        b.member_offset("sk_buff", "no_such_member")
    reasons = b.enum("skb_drop_reason")
    assert "SKB_DROP_REASON_NO_SOCKET" in reasons.values()


class Stub(Probe):
    spec = Spec("drops", "tracepoint", "skb:kfree_skb", "nothing", "nothing", "a stub", "on")
    fails = ""

    def attach(self) -> None:
        if self.fails:
            raise Unavailable(self.fails)
        self.attached = True

    def detach(self) -> None:
        self.attached = False

    def read(self, now: float) -> dict[str, Any]:
        return {"drops": []}


def stubs(**fails: str) -> dict[str, Probe]:
    out: dict[str, Probe] = {}
    for name in P.PROBES:
        kind = type(f"Stub_{name}", (Stub,), {"spec": Spec(name, "tracepoint", name, "", "",
                                                            "", "on"),
                                              "fails": fails.get(name, "")})
        out[name] = kind()
    return out


def test_the_manager_says_why_a_probe_is_not_attached() -> None:
    m = ProbeManager(ProbeSettings({**dict.fromkeys(P.PROBES, "on"), "napi": "off"}),
                     stubs(tcp="kprobes are missing"))
    m.start()
    doc = m.tick()
    states = {p["name"]: (p["state"], p["reason"]) for p in doc["probes"]}
    assert states["napi"] == ("off", "off in the [probes] settings")
    assert states["tcp"] == ("unavailable", "kprobes are missing")
    assert states["drops"] == ("attached", "")
    with pytest.raises(RefusedError, match="probe tcp cannot attach here: kprobes are missing"):
        m.change("tcp", True)
    assert m.change("drops", False) == {"probe": m.describe("drops"), "changed": True}
    assert m.describe("drops")["state"] == "off"
    assert all(P.conforms(p, P.Probe) == [] for p in doc["probes"])


def test_an_auto_probe_that_costs_too_much_is_detached_with_the_reason() -> None:
    m = ProbeManager(ProbeSettings({**dict.fromkeys(P.PROBES, "on"), "tcp": "auto"}, 1.0),
                     stubs())
    m.start()
    m.costs["tcp"].figures = (1e6, 300.0, 2.5)    # 2.5 % of a CPU, over the 1 % limit
    m.costs["drops"].figures = (1e6, 300.0, 2.5)  # "on": kept, however much it costs
    m._auto_limit()
    assert m.state["tcp"] == "off" and m.state["drops"] == "attached"
    assert m.reason["tcp"] == ("detached: it took 2.50 % of a CPU, above [probes] "
                               "auto_cpu_percent (1 %)")


def test_probe_methods_take_only_known_probe_names() -> None:
    assert P.METHODS["probe_attach"].check({"name": "napi"}) == {"name": "napi"}
    with pytest.raises(InvalidParams, match="no probe 'nap'; the probes are drops, xdp"):
        P.METHODS["probe_detach"].check({"name": "nap"})
    assert P.conforms(P.empty_kernel(), P.Kernel) == []


def test_the_probes_table_is_checked_like_every_table(tmp_path: Path) -> None:
    from xlb.agent.settings import load

    base = ('[instance]\nname = "t"\ninterface = "lo"\n[[vip]]\nname = "w"\n'
            'address = "10.1.0.1"\nport = 80\nprotocol = "tcp"\n')
    path = tmp_path / "c.toml"
    path.write_text(base + '[probes]\ntcp = "sometimes"\nnapi = "off"\nwhat = 1\n')
    with pytest.raises(ConfigError) as e:
        load(str(path))
    text = str(e.value)
    assert "probes.tcp: 'sometimes' is not 'on', 'off' or 'auto'" in text
    assert "probes: unknown key 'what'" in text
    path.write_text(base + '[probes]\nnapi = "off"\n')
    wanted = load(str(path)).probes.wanted
    assert wanted == {**dict.fromkeys(P.PROBES, "on"), "napi": "off", "tcp": "auto"}
