"""`xlb lab up | down | status`: the whole lab as one operation each.

up: namespaces and links (topology.py), the decapsulation program on every
backend, a pass program on the router's LB-facing veths (native XDP_TX on a
veth needs an XDP program on the peer), BIRD in the router (fabric.py), the
backends' servers, and one agent per LB (lb1, lb2) that loads its data plane and
announces the VIPs by BGP; up returns once the router has every LB as a next hop
for every VIP. down: servers, agents and BIRD (by the PIDs recorded at up), data
planes (unpinned), namespaces. Nothing else is touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

from xlb import procs, resources
from xlb.dataplane import lifecycle, xdp
from xlb.dataplane.config import dump_toml, parse_config
from xlb.errors import AgentUnavailable, Interrupted, LabError, NotLoadedError
from xlb.lab import fabric, interrupt, topology
from xlb.lab.topology import ROUTER, VIP, VIP6, Lab
from xlb.paths import RUN_ROOT, default_socket

STATE = os.path.join(RUN_ROOT, "lab.json")


def lb_config(lab: Lab, lb: str, **instance: Any) -> dict[str, Any]:
    """lb's data plane config; `instance` overrides [instance] keys (a test's tiny pool)."""
    backends = [{"address": b.address} for b in lab.backends]
    backends6 = [{"address": b.address6} for b in lab.backends]  # 6in6
    return {
        "instance": {"name": lb, "interface": "l0", "netns": lab.lb_ns(lb), "xdp_mode": "native",
                     "mtu": topology.LINK_MTU, "max_vips": 16, "max_backends": 256,
                     # outer IPv6 sources from the lab's prefix, one /64 per LB
                     "encap_source_v6": f"{topology.NET6}:f{lab.lbs.index(lb) + 1}::/64",
                     # the lab's VIPs are dsr; `xlb mode web snat` uses these (routed to lb)
                     "snat_pool_v4": lab.snat_pool(lb), "snat_pool_v6": lab.snat_pool(lb, True),
                     **instance},
        "vip": [{"name": name, "address": address, "port": port, "protocol": proto,
                 "backend": backends6 if ":" in address else backends}
                for name, (address, port, proto) in topology.VIPS.items()],
    }


def _attach_helpers(lab: Lab) -> None:
    from bcc import BPF

    bpf_dir = resources.data_dir("bpf")
    cflags = [f"-I{bpf_dir}"]  # decap.c includes parse.h, as loader.py's xlb.c build does
    decap = BPF(src_file=str(bpf_dir / "decap.c").encode(),
                cflags=cflags).load_func(b"xlb_decap", BPF.XDP)
    floor = BPF(src_file=str(bpf_dir / "pass.c").encode(),
                cflags=cflags).load_func(b"xlb_floor", BPF.XDP)
    with interrupt.held():  # netlink through pyroute2: not cut in half (interrupt.py)
        for be in lab.backends:
            xdp.attach("b0", decap.fd, "native", be.name)
        for lb in lab.lbs:
            xdp.attach(f"r-{lb}", floor.fd, "native", ROUTER)


def _start_server(ns: str) -> int:
    be = next(b for b in Lab().backends if b.name == ns)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "xlb.lab.server",
         "--name", ns.removeprefix(topology.PREFIX), "--vip", VIP, "--vip6", VIP6,
         "--address", be.address, "--address6", be.address6],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    return proc.pid


def _state() -> dict[str, Any]:
    try:
        with open(STATE) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _save_state(state: dict[str, Any]) -> None:
    """What down() needs to end the lab's processes: written as soon as they exist."""
    os.makedirs(RUN_ROOT, exist_ok=True)
    with open(STATE, "w") as f:
        json.dump(state, f)


def stop_server(backend: str) -> None:
    """Stop one backend's servers (a backend failure, for demos and tests)."""
    state = _state()
    pid = state.get("pids", {}).pop(topology.PREFIX + backend, None)
    if pid is None:
        raise LabError(f"no running server for backend {backend!r} in this lab")
    os.killpg(pid, signal.SIGTERM)
    _save_state(state)


def start_server(backend: str) -> None:
    state = _state()
    ns = topology.PREFIX + backend
    if ns in state.get("pids", {}):
        raise LabError(f"backend {backend!r} already has a running server")
    state.setdefault("pids", {})[ns] = _start_server(ns)
    _save_state(state)


def _wait_listening(lab: Lab, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for be in lab.backends:
        while not {"0.0.0.0:80", "[::]:80"} <= set(topology.sh(be.name, "ss", "-Hltn").split()):
            if time.monotonic() > deadline:
                raise LabError(f"the server in {be.name} did not start")
            interrupt.check()
            time.sleep(0.05)


def up() -> dict[str, Any]:
    """Build the lab. Ctrl-C or SIGTERM stops the build at once, and everything it had
    made is removed (Interrupted says so); a failure is cleaned up the same way."""
    lifecycle.require_root("xlb lab up")
    started = time.monotonic()
    with interrupt.stopping():
        try:
            down()
            lab = topology.up()
            interrupt.check()  # between steps: a Ctrl-C that a fork's hook swallowed
            _attach_helpers(lab)
            interrupt.check()
            state: dict[str, Any] = {"pids": {}, "agents": {}, "lbs": list(lab.lbs)}
            with interrupt.held():
                state["bird"] = fabric.start(lab)
                _save_state(state)
            for be in lab.backends:
                with interrupt.held():  # started and recorded, or neither
                    state["pids"][be.name] = _start_server(be.name)
                    _save_state(state)
            _wait_listening(lab)
            for lb in lab.lbs:
                with interrupt.held():
                    state["agents"][lb] = _start_agent(lab, lb)
                    _save_state(state)
            loaded = [_wait_agent(lb, state["agents"][lb]) for lb in lab.lbs]
            routes = fabric.wait_routes(lab)  # both LBs announce every VIP: ECMP
        except BaseException as e:
            with interrupt.held(drop=True):  # a second Ctrl-C does not cut the cleanup short
                down()
            if isinstance(e, Interrupted):
                raise Interrupted(e.signum, "the lab build stopped, and everything it had "
                                  "made is removed") from None
            raise
    return {"namespaces": lab.namespaces(), "vip": VIP, "vip6": VIP6, "lbs": loaded,
            "routes": routes, "bird": state["bird"],
            "seconds": round(time.monotonic() - started, 2)}


def agent_config_path(lb: str) -> str:
    return os.path.join(RUN_ROOT, "lab", f"{lb}.toml")


def _start_agent(lab: Lab, lb: str, prefix: tuple[str, ...] = (),
                 instance: dict[str, Any] | None = None) -> int:
    """The lab's LBs run as agents, like production: the agent owns the data plane.
    `prefix` runs it through another command (setpriv: as another user); `instance`
    overrides [instance] keys of its config file (a changed file wins over saved intent)."""
    path = agent_config_path(lb)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        # agents run in the root namespace: one metrics port each (lb1 9465, lb2 9466)
        f.write(f'[agent]\nsocket = "{default_socket(lb)}"\nhealth_interval = 0.5\n'
                f'health_timeout = 0.25\nmetrics = "127.0.0.1:{9465 + lab.lbs.index(lb)}"\n\n')
        f.write(fabric.bgp_table(lab, lb) + "\n")
        f.write(dump_toml(parse_config(lb_config(lab, lb, **(instance or {})))))
    log = open(os.path.join(os.path.dirname(path), f"{lb}.log"), "ab")  # noqa: SIM115
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "xlb", "agent", "--config", path],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                            start_new_session=True)
    log.close()
    return proc.pid


def restart_agent(lb: str, sig: int = signal.SIGTERM) -> dict[str, Any]:
    """End lb's agent with `sig` (SIGKILL = a crash) and start it again; it adopts the
    pinned data plane, which never stopped forwarding. Its ExaBGP ends with it, so the
    router moves its flows to the other LB meanwhile; returns once it is a next hop again."""
    stop_agent(lb, sig)
    return start_agent(lb)


def stop_agent(lb: str, sig: int = signal.SIGTERM) -> None:
    """End lb's agent with `sig`; the data plane keeps forwarding."""
    state = _state()
    pid = state.get("agents", {}).get(lb)
    if pid is None:
        raise LabError(f"no agent for {lb!r} in this lab")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    procs.ended(pid, 10.0)


def start_agent(lb: str, prefix: tuple[str, ...] = (), routes: bool = True,
                instance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Start lb's agent (after stop_agent); it adopts the pinned data plane. With `routes`,
    return once it announces again: the router has every LB as next hop for every VIP
    (an LB restored in maintenance never does: pass routes=False). `instance`: keys of
    its [instance] other than the lab's (gone at the next start without them)."""
    state = _state()
    lab = Lab()
    new = _start_agent(lab, lb, prefix, instance)
    state.setdefault("agents", {})[lb] = new
    _save_state(state)
    info = _wait_agent(lb, new)
    if routes:
        fabric.wait_routes(lab)
    return info


def _wait_agent(lb: str, pid: int, timeout: float = 60.0) -> dict[str, Any]:
    from xlb.api.client import AgentClient

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise LabError(f"the agent for {lb} exited: see "
                           f"{os.path.join(RUN_ROOT, 'lab', lb + '.log')}")
        try:
            with AgentClient(default_socket(lb)) as c:
                st = c.call("status")
                if st.get("vips"):
                    return {"instance": lb, "mode": st["xdp_mode"], "pid": pid,
                            "socket": default_socket(lb)}
        except AgentUnavailable:
            pass
        interrupt.check()
        time.sleep(0.1)
    raise LabError(f"the agent for {lb} did not answer within {timeout:.0f} s")


def down() -> dict[str, Any]:
    lifecycle.require_root("xlb lab down")
    lab = Lab()
    stopped = []
    state = _state()
    for ns, pid in state.get("pids", {}).items():
        try:  # the server runs in its own session: end that group (ip netns exec + python)
            os.killpg(pid, signal.SIGTERM)
            stopped.append(ns)
        except ProcessLookupError:
            pass
    # SIGTERM: the agent stops its ExaBGP, exits and leaves the data plane, unloaded next
    agents_stopped = [lb for lb, pid in state.get("agents", {}).items() if procs.stop(pid)]
    bird_stopped = bool(state.get("bird")) and procs.stop(state["bird"])
    unloaded = []
    for lb in state.get("lbs", list(lab.lbs)):
        try:
            lifecycle.unload_instance(lb, remove_pins=True)
            unloaded.append(lb)
        except NotLoadedError:
            pass
    removed = topology.down(lab)
    if os.path.exists(STATE):
        os.unlink(STATE)
    shutil.rmtree(os.path.dirname(agent_config_path("lb1")), ignore_errors=True)
    return {"servers_stopped": stopped, "agents_stopped": agents_stopped,
            "bird_stopped": bird_stopped, "unloaded": unloaded, "namespaces_removed": removed}


def traffic(args: list[str], quiet: bool = False,
            stdout: int | None = None) -> subprocess.Popen[bytes]:
    """Start xlb.lab.traffic inside the client namespace (a child process). quiet: its
    output piped, its errors dropped, a session of its own; else `stdout` (None: ours)."""
    from pyroute2 import netns

    if topology.CLIENT not in netns.listnetns():
        raise LabError("the lab is not up: run `xlb lab up` first")
    out = subprocess.DEVNULL if quiet else None
    return subprocess.Popen(["ip", "netns", "exec", topology.CLIENT, sys.executable, "-m",
                             "xlb.lab.traffic", *args], stdout=subprocess.PIPE if quiet
                            else stdout, stderr=out, start_new_session=quiet,
                            preexec_fn=_end_with_parent)


def stop_traffic(gen: subprocess.Popen[bytes]) -> dict[str, Any]:
    """End a quiet traffic generator (SIGTERM) and return its summary ({} if none)."""
    gen.terminate()
    out, _ = gen.communicate(timeout=30)
    try:
        return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]
    except (ValueError, IndexError):
        return {}


def _end_with_parent() -> None:
    """In the child: SIGTERM it when its parent dies (a closed terminal, a killed demo), so
    the generator never outlives whoever started it. It stops on SIGTERM like on Ctrl-C."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def status() -> dict[str, Any]:
    from pyroute2 import netns

    lab = Lab()
    present = set(netns.listnetns())
    state = _state()
    return {"namespaces": {ns: ns in present for ns in lab.namespaces()},
            "lbs": {lb: lb in lifecycle.instances() for lb in lab.lbs},
            "agents": {lb: procs.alive(pid) for lb, pid in state.get("agents", {}).items()},
            "router": fabric.status(lab, int(state.get("bird", 0))), "vip": VIP, "vip6": VIP6}
