"""The forwarding modes and the XDP attach mode in the lab, with real TCP and UDP.

A VIP in SNAT mode: each LB rewrites the client's packets to come from an address of its
own pool (the router routes each pool back to its LB), the backend answers that address,
and the LB translates the answer back; the backends say who asked (X-Client, the echo's
second line), which proves the mode from the backend side. Switches are made on both LBs,
as an operator does (either may carry a flow), under traffic: established connections
keep the mode they started in, new ones take the new mode, none breaks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from xlb.dataplane.manager import Dataplane
from xlb.dataplane.structs import Reason
from xlb.lab import modes, run, topology
from xlb.lab.fabric import PREFIXES
from xlb.lab.failover import wait_hops
from xlb.lab.longlived import LongLived
from xlb.lab.server import parse_client
from xlb.lab.switches import call_lbs, measure
from xlb.lab.topology import VIPS, Lab

LAB = Lab()

# argv: VIP, client sources; per source one HTTP request (X-Client read) and one UDP query
CLIENT_SCRIPT = """
import json, socket, sys
vip, sources = sys.argv[1], sys.argv[2:]
family = socket.AF_INET6 if ":" in vip else socket.AF_INET
out = []
for i, src in enumerate(sources):
    s = socket.create_connection((vip, 80), timeout=3, source_address=(src, 0))
    peer, sport = s.getpeername()[0], s.getsockname()[1]
    s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\nConnection: close\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    s.close()
    head, _, body = data.partition(b"\\r\\n\\r\\n")
    client = [ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\\r\\n")
              if ln.lower().startswith(b"x-client:")]
    u = socket.socket(family, socket.SOCK_DGRAM)
    u.bind((src, 0))
    u.settimeout(3)
    query = b"ping%d-%s" % (i, src.encode())
    u.sendto(query, (vip, 53))
    answer, upeer = u.recvfrom(300)
    name, uclient, echoed = answer.split(b"\\n", 2)
    out.append({"src": src, "sport": sport, "peer": peer, "backend": body.decode().strip(),
                "client": client[0] if client else "", "udp_peer": upeer[0],
                "udp_backend": name.decode(), "udp_client": uclient.decode(),
                "udp_echo_ok": echoed == query, "udp_sport": u.getsockname()[1]})
print(json.dumps(out))
"""


def ask(vip: str, sources: list[str]) -> list[dict[str, Any]]:
    r = subprocess.run(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-c",
                        CLIENT_SCRIPT, vip, *sources], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def set_mode(names: tuple[str, ...] | list[str], mode: str) -> None:
    """Switch VIPs on every LB (the router spreads flows over both)."""
    for name in names:
        for lb, answer in call_lbs("mode", {"vip": name, "mode": mode}).items():
            assert answer["after"][name]["mode"] == mode, (lb, answer)


@pytest.fixture
def all_dsr_after() -> Iterator[None]:
    """Every lab VIP back in DSR after the test, even a failed one."""
    try:
        yield
    finally:
        set_mode(list(VIPS), "dsr")


def new_connection_modes(seconds: float = 1.0) -> dict[str, dict[str, int]]:
    """Per VIP, the modes new connections (and UDP queries) took, as the backends saw them."""
    gen = run.traffic(["--rate", "100", "--duration", str(seconds), "--json"], quiet=True)
    out, _ = gen.communicate(timeout=60)
    summary = json.loads(out.decode().strip().splitlines()[-1])
    assert summary["tcp_failed"] == 0 and summary["udp_failed"] == 0, summary
    return summary["modes"]  # type: ignore[no-any-return]


TCP_VIPS = tuple(n for n, (_, _, proto) in VIPS.items() if proto == "tcp")
UDP_VIPS = tuple(n for n, (_, _, proto) in VIPS.items() if proto == "udp")


def assert_new_flows_took(seen: dict[str, dict[str, int]], mode: str,
                          names: tuple[str, ...] = tuple(VIPS)) -> None:
    """Every new TCP connection to `names` took `mode` (a SYN always starts a new flow);
    their UDP queries took it too, but for a rare one: a UDP flow is its 5-tuple, and a
    fresh socket may get the client port of an earlier flow that an LB still holds,
    which keeps the mode it started in (by design). So UDP: mostly `mode`."""
    other = "snat" if mode == "dsr" else "dsr"
    for name in names:
        n = seen[name]
        if name in TCP_VIPS:
            assert n[mode] > 0 and n[other] == 0, (name, seen)
        else:
            assert n[mode] > 0 and n[other] * 10 <= n[mode], (name, seen)


@pytest.mark.parametrize("vip, sources, names", [
    (topology.VIP, topology.CLIENT_ADDRS[:16], ("web", "dns")),
    (topology.VIP6, topology.CLIENT_ADDRS6[:16], ("web6", "dns6")),
], ids=["v4", "v6"])
def test_snat_end_to_end(lab: dict, all_dsr_after: None, vip: str, sources: list[str],
                         names: tuple[str, str]) -> None:
    """The backend sees an address of the carrying LB's pool, its replies cross that LB
    (tx_snat_reply), the client sees the VIP as the source; TCP and UDP."""
    set_mode(names, "snat")
    before = modes.packets()
    out = ask(vip, sources)
    moved = modes.delta(before, modes.packets())
    owners = set()
    for flow in out:
        assert flow["peer"] == vip and flow["udp_peer"] == vip, "the client must see the VIP"
        assert flow["udp_echo_ok"], "a UDP answer carried another query: mistranslated"
        for key in ("client", "udp_client"):
            address, port = parse_client(flow[key])
            owner = LAB.snat_owner(address)
            assert owner is not None, f"the backend saw {flow[key]}, not a SNAT address"
            assert 1024 <= port <= 65535
            owners.add(owner[0])
    assert owners == set(LAB.lbs), f"16 flows of each kind, all through {owners}"
    for lb in LAB.lbs:
        m = moved[lb]
        assert m["dsr"] == 0, f"{lb} forwarded DSR packets of SNAT VIPs: {m}"
        assert m["snat"] > 0 and m["snat_reply"] > 0 and m["snat_dropped"] == 0, (lb, m)
    total = {k: sum(moved[lb][k] for lb in LAB.lbs) for k in ("snat", "snat_reply")}
    # every TCP connection: >= 4 client packets (SYN, ACK, GET, FIN) and >= 3 replies
    # (SYN-ACK, the answer, FIN); every UDP query 1 each way
    assert total["snat"] >= 5 * len(sources) and total["snat_reply"] >= 4 * len(sources), total
    # the agents count it per VIP and mode too
    for lb, vips in call_lbs("backends", {}).items():
        by = {v["name"]: v for v in vips}
        assert all(by[n]["mode"] == "snat" for n in names), lb


def test_switch_dsr_snat_dsr_under_traffic_breaks_nothing(lab: dict, all_dsr_after: None
                                                          ) -> None:
    """Long-lived connections opened in DSR live through both switches and stay DSR;
    those opened in SNAT live through the switch back and stay SNAT (their backend and
    who it sees asking never change); new connections take each new mode."""
    assert_new_flows_took(new_connection_modes(), "dsr")
    with LongLived(count=4) as in_dsr:
        gen = run.traffic(["--rate", "100", "--json"], quiet=True)
        try:
            time.sleep(1.0)
            set_mode(list(VIPS), "snat")
            with LongLived(count=4) as in_snat:
                time.sleep(1.0)
                assert_new_flows_took(new_connection_modes(), "snat")
                set_mode(list(VIPS), "dsr")
                time.sleep(1.0)
                assert_new_flows_took(new_connection_modes(), "dsr")
                time.sleep(1.0)
                kept_snat = in_snat.stop()
            kept_dsr = in_dsr.stop()
        finally:
            new = run.stop_traffic(gen)
    for f in in_dsr.flows:  # DSR: the backend sees the client itself
        assert parse_client(f["client"])[0] == f["src"], f
    for f in in_snat.flows:
        assert LAB.snat_owner(parse_client(f["client"])[0]) is not None, f
    for kept in (kept_dsr, kept_snat):
        assert kept["broken"] == [] and kept["requests"] > 8 * 20, kept
    assert new["tcp_failed"] == 0 and new["udp_failed"] == 0, new
    # the generator's own TCP connections took both modes; its UDP sockets live for the
    # whole run (one per client address), so their flows kept the mode they started in
    modes_seen = new["modes"]
    assert all(modes_seen[n]["dsr"] > 0 and modes_seen[n]["snat"] > 0
               for n in ("web", "web6")), modes_seen


def test_xdp_native_generic_native_under_traffic(lab: dict) -> None:
    """Both LBs re-attach in generic mode and back: long-lived connections survive; the
    gap each switch answered and the UDP queries lost are printed (figures: bench/modes.py)."""
    r = measure([("xdp_mode", {"mode": "generic"}), ("xdp_mode", {"mode": "native"})],
                hold=2.0)
    for step, (before, after) in zip(r["steps"], (("native", "generic"),
                                                  ("generic", "native")), strict=True):
        for lb, answer in step["lbs"].items():
            assert (answer["before"], answer["after"]) == (before, after), (lb, answer)
            assert answer["interface"] == "l0" and 0 <= answer["gap_seconds"] < 1.0, answer
    for lb, status in call_lbs("status", {}).items():
        assert status["xdp_mode"] == "native", lb
    assert r["broken"] == 0, r["long_lived"]["broken"]
    assert r["new_failed"] == 0, r
    stream = r["stream"]
    gaps = [a["gap_seconds"] for s in r["steps"] for a in s["lbs"].values()]
    print(f"\nXDP switch: gaps {gaps} s; UDP stream {stream['rate']:g}/s: lost "
          f"{stream['lost']} of {stream['sent']}, longest outage {stream['longest_outage_ms']} ms")
    assert stream["sent"] > 1000 and stream["lost"] < stream["sent"] * 0.02, stream


TINY = {"snat_pool_v4": "198.19.1.1/32", "snat_port_min": 40000, "snat_port_max": 40001}

# argv: count, sources...: opens one connection per source (kept open), a GET on each;
# prints per connection the backend and X-Client, or the error
HOLD_SCRIPT = """
import json, socket, sys
out, keep = [], []
for src in sys.argv[1:]:
    try:
        s = socket.create_connection(("198.19.0.10", 80), timeout=2, source_address=(src, 0))
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: vip\\r\\n\\r\\n")
        data = b""
        while not data.partition(b"\\r\\n\\r\\n")[2].endswith(b"\\n"):  # the body: "beN\\n"
            chunk = s.recv(4096)
            if not chunk:
                raise ConnectionResetError
            data += chunk
        head, _, body = data.partition(b"\\r\\n\\r\\n")
        client = [ln.split(b":", 1)[1].strip().decode() for ln in head.split(b"\\r\\n")
                  if ln.lower().startswith(b"x-client:")][0]
        out.append({"src": src, "backend": body.decode().strip(), "client": client})
        keep.append(s)
    except OSError as e:
        out.append({"src": src, "error": type(e).__name__})
print(json.dumps(out))
"""


@pytest.fixture
def lb1_alone_with_a_tiny_pool(lab: dict) -> Iterator[None]:
    """lb1's agent restarted with a /32 pool of 2 ports, lb2 out of the route (maintenance),
    so every flow goes through lb1; all put back after."""
    run.stop_agent("lb1")
    run.start_agent("lb1", routes=False, instance=TINY)
    try:
        call_lbs("bgp_withdraw", {"all": True}, ("lb2",))
        wait_hops(LAB, ("lb1",), PREFIXES)
        yield
    finally:
        call_lbs("mode", {"vip": "web", "mode": "dsr"}, ("lb1",))
        run.stop_agent("lb1")
        run.start_agent("lb1", routes=False)
        call_lbs("bgp_announce", {"all": True}, ("lb2",))
        wait_hops(LAB, LAB.lbs, PREFIXES)


def test_port_exhaustion_is_a_counted_drop_never_a_wrong_translation(
        lab: dict, lb1_alone_with_a_tiny_pool: None) -> None:
    """A /32 pool with 2 ports holds 2 flows per backend (the reply's key names the
    backend): 12 connections held open get 6 answers at most, each from its own
    (backend, SNAT port); the rest are dropped as drop_snat_no_port and counted."""
    call_lbs("mode", {"vip": "web", "mode": "snat"}, ("lb1",))
    before = modes.packets()
    r = subprocess.run(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-c",
                        HOLD_SCRIPT, *topology.CLIENT_ADDRS[:12]], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    moved = modes.delta(before, modes.packets())["lb1"]
    ok = [c for c in out if "client" in c]
    failed = [c for c in out if "error" in c]
    assert 3 <= len(ok) <= 6 and len(failed) == 12 - len(ok), out
    claims = [(c["backend"], c["client"]) for c in ok]
    assert len(set(claims)) == len(claims), f"two flows on one translation: {claims}"
    assert {c["client"] for c in ok} <= {"198.19.1.1:40000", "198.19.1.1:40001"}, ok
    assert moved["snat_dropped"] >= len(failed), moved
    with Dataplane("lb1") as dp:
        no_port = int(dp.counters().reasons[Reason.DROP_SNAT_NO_PORT, 0])
    assert no_port >= len(failed)
    (web,) = call_lbs("backends", {"vip": "web"}, ("lb1",))["lb1"]
    assert web["modes"]["no_port"] >= len(failed), web["modes"]


def xlb(*argv: str) -> Any:
    r = subprocess.run([sys.executable, "-m", "xlb", *argv, "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, (argv, r.stderr)
    return json.loads(r.stdout)


def test_cli_switches_both_modes(lab: dict, all_dsr_after: None) -> None:
    """`xlb mode` and `xlb xdp-mode` on each LB, as an operator types them."""
    for lb in lab["lbs"]:
        answer = xlb("mode", "web", "snat", "--yes", "--socket", lb["socket"])
        assert answer["after"]["web"]["mode"] == "snat", answer
    seen = new_connection_modes()
    assert_new_flows_took(seen, "snat", ("web",))
    assert_new_flows_took(seen, "dsr", ("web6", "dns", "dns6"))  # only web was switched
    for lb in lab["lbs"]:
        shown = {v["name"]: v["mode"] for v in xlb("vips", "--socket", lb["socket"])}
        assert shown == {**{n: "dsr" for n in VIPS}, "web": "snat"}, (lb, shown)
        xlb("mode", "web", "dsr", "--yes", "--socket", lb["socket"])
    assert_new_flows_took(new_connection_modes(), "dsr")
    sock = lab["lbs"][0]["socket"]
    shown = xlb("xdp-mode", "--socket", sock)
    assert shown["xdp_mode"] == "native", shown
    for to, frm in (("generic", "native"), ("native", "generic")):
        answer = xlb("xdp-mode", to, "--yes", "--socket", sock)
        assert (answer["before"], answer["after"]) == (frm, to), answer
    assert call_lbs("status", {})["lb1"]["xdp_mode"] == "native"



SESSION = f"xlb-e2e-modes-{os.getpid()}"


def screen() -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True,
                          text=True, check=True).stdout


def keys(*k: str) -> None:
    subprocess.run(["tmux", "send-keys", "-t", SESSION, *k], check=True)


def wait_for(cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; the screen:\n{screen()}")
        time.sleep(0.2)


def lb1(method: str, **params: Any) -> Any:
    return call_lbs(method, params, ("lb1",))["lb1"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (bootstrap)")
def test_console_switches_both_modes(lab: dict, all_dsr_after: None, tmp_path: Path) -> None:
    """As a person: the console on lb1 in a terminal; `m` on the Backends view switches the
    selected VIP (after a confirmation), `x` the XDP mode; lb1's agent says it happened."""
    xlb_bin = str(Path(sys.executable).with_name("xlb"))
    # a running tmux server starts the command with its own environment: hand ours over
    cmd = (f"env XDG_CONFIG_HOME={tmp_path} TERM=xterm-256color "
           f"PYTHONPATH={os.environ.get('PYTHONPATH', '')} {xlb_bin} console --socket "
           f"{lab['lbs'][0]['socket']}; sleep 60")
    subprocess.run(["tmux", "new-session", "-d", "-s", SESSION, "-x", "160", "-y", "48", cmd],
                   check=True)
    try:
        wait_for(lambda: "lb1" in screen() and "live" in screen(), "the live console")
        keys("2")
        wait_for(lambda: "VIP web " in screen(), "the Backends view of web")
        for frm, to in (("dsr", "snat"), ("snat", "dsr")):
            wait_for(lambda: "m Mode" in screen(), "m in the footer")
            wait_for(partial(lambda m: f"Mode {m} " in screen(), frm.upper()),
                     f"the view to show web in {frm}")
            keys("m")
            wait_for(partial(lambda m: f"Switch to {m}" in screen(), to.upper()),
                     "the mode confirmation")
            assert "VIP web" in screen() and "Forwarding mode" in screen()
            keys("y")
            wait_for(lambda: "Forwarding mode" not in screen(), "the confirmation to close")
            wait_for(partial(lambda m: {v["name"]: v["mode"] for v in lb1("vips")}["web"] == m,
                             to), f"lb1 to switch web to {to}")
        for to in ("generic", "native"):
            for _ in range(10):  # the console offers the other mode once its snapshot shows
                wait_for(lambda: "x XDP" in screen(), "x in the footer")  # the last switch
                keys("x")
                wait_for(lambda: "The gap" in screen(), "the XDP mode confirmation")
                if f"Re-attach {to}" in screen():
                    break
                keys("n")
                wait_for(lambda: "The gap" not in screen(), "the confirmation to close")
                time.sleep(0.5)
            keys("y")
            wait_for(lambda: "The gap" not in screen(), "the confirmation to close")
            wait_for(partial(lambda m: lb1("status")["xdp_mode"] == m, to),
                     f"lb1 to re-attach in {to}")
        entries = lb1("audit", n=20)
        assert sum("mode" in json.dumps(e) for e in entries) >= 4, entries
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
        if lb1("status")["xdp_mode"] != "native":
            lb1("xdp_mode", mode="native")
