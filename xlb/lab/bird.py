"""The router side of BGP: a real BIRD 2 daemon in a network namespace, driven by birdc.

The lab's router and the BGP tests need a real peer that installs ECMP routes in the kernel
(`merge paths`), so this is BIRD itself, not a model of it. It runs in the foreground
(`bird -f`) under our own Popen, so it is ended by the PID we started and never by name (a
later process finds it by its pid file, checked against its command line); its control
socket, config, pid file and log live in a work directory the caller owns. Everything read back
(sessions, next hops) comes from BIRD's own answers over that socket.
"""

from __future__ import annotations

import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from xlb import procs
from xlb.errors import LabError

BIRD = "bird"
BIRDC = "birdc"


@dataclass(frozen=True)
class Peer:
    name: str        # protocol name in BIRD (lb1_v4)
    address: str     # the LB's address
    local: str       # the router's address on that link
    asn: int         # the LB's ASN


def _family(address: str) -> str:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def config(asn: int, router_id: str, peers: Sequence[Peer], hold_time: int = 9) -> str:
    """bird.conf for a router with one passive eBGP session per peer that installs every
    learnt route in the kernel, equal routes merged into one ECMP route. Timers are short
    (hold `hold_time`, retry after errors in 1 s) so tests and the lab converge in seconds."""
    lines = [
        f"router id {router_id};",
        "protocol device { scan time 2; }",
        "protocol kernel kernel4 {",
        "    ipv4 { import none; export all; };",
        "    merge paths yes limit 8;",
        "}",
        "protocol kernel kernel6 {",
        "    ipv6 { import none; export all; };",
        "    merge paths yes limit 8;",
        "}",
    ]
    for p in peers:
        lines += [
            f"protocol bgp {p.name} {{",
            f"    local {p.local} as {asn};",
            f"    neighbor {p.address} as {p.asn};",
            "    passive on;",
            f"    hold time {hold_time};",
            f"    keepalive time {max(1, hold_time // 3)};",
            "    connect retry time 2;",
            "    error wait time 1, 4;",
            f"    {_family(p.address)} {{ import all; export none; }};",
            "}",
        ]
    return "\n".join(lines) + "\n"


_VIA = re.compile(r"^\s+via\s+(\S+)", re.MULTILINE)


class Bird:
    """One BIRD process in `netns`, with bird.conf, bird.ctl and bird.log in `workdir`."""

    def __init__(self, netns: str, workdir: str) -> None:
        self.netns = netns
        self.workdir = workdir
        self.conf = os.path.join(workdir, "bird.conf")
        self.ctl = os.path.join(workdir, "bird.ctl")
        self.log = os.path.join(workdir, "bird.log")
        self.pidfile = os.path.join(workdir, "bird.pid")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, conf: str, timeout: float = 10.0) -> int:
        """Write `conf` (plus our log line), start `bird -f` in the namespace and return its
        PID once its control socket answers. A config BIRD refuses raises LabError with
        BIRD's words."""
        if self.pid:
            raise LabError(f"BIRD already runs in {self.netns} (pid {self.pid})")
        os.makedirs(self.workdir, exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(f'log "{self.log}" all;\n' + conf)
        check = subprocess.run([BIRD, "-p", "-c", self.conf], capture_output=True, text=True)
        if check.returncode != 0:
            raise LabError(f"BIRD refuses {self.conf}: {(check.stderr or check.stdout).strip()}")
        out = open(os.path.join(self.workdir, "bird.out"), "wb")
        try:
            # `ip netns exec` execs bird: the PID is BIRD's own
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, BIRD, "-f", "-c", self.conf, "-s",
                 self.ctl, "-P", self.pidfile], stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                start_new_session=True)
        finally:
            out.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise LabError(f"BIRD exited at start ({self.proc.returncode}): "
                               f"{self._tail()}")
            r = subprocess.run([BIRDC, "-s", self.ctl, "show", "status"], capture_output=True,
                               text=True)
            if r.returncode == 0 and "Daemon is up" in r.stdout:
                return self.proc.pid
            if time.monotonic() > deadline:
                self.stop()
                raise LabError(f"BIRD did not answer on {self.ctl} within {timeout:g} s")
            time.sleep(0.05)

    def _tail(self) -> str:
        text = ""
        for name in ("bird.out", "bird.log"):
            try:
                with open(os.path.join(self.workdir, name)) as f:
                    text += f.read()
            except OSError:
                pass
        return text.strip()[-500:]

    @property
    def pid(self) -> int:
        """The running BIRD of this work directory: the one we started, or (from another
        process, e.g. `xlb lab down`) the one its pid file names if that is still BIRD with
        our config; 0 if none."""
        if self.proc is not None:
            return self.proc.pid if self.proc.poll() is None else 0
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip() or 0)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            return 0
        return pid if self.conf.encode() in argv and os.path.basename(argv[0]) == b"bird" else 0

    def stop(self, timeout: float = 5.0) -> None:
        """End this work directory's BIRD (SIGTERM, then SIGKILL), by its PID; nothing else.
        Works from another process than the one that started it (pid file, checked)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            procs.end(proc, timeout)
        else:
            pid = self.pid
            if pid:
                os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + timeout
                while self.pid and time.monotonic() < deadline:
                    time.sleep(0.05)
                if self.pid:
                    os.kill(pid, signal.SIGKILL)
        for path in (self.ctl, self.pidfile):
            try:
                os.unlink(path)
            except OSError:
                pass

    def cmd(self, *words: str) -> str:
        """One birdc command; its answer without the greeting line."""
        r = subprocess.run([BIRDC, "-s", self.ctl, *words], capture_output=True, text=True,
                           timeout=10)
        if r.returncode != 0:
            raise LabError(f"birdc {' '.join(words)}: {(r.stderr or r.stdout).strip()}")
        lines = r.stdout.splitlines()
        if lines and lines[0].startswith("BIRD ") and lines[0].endswith("ready."):
            lines = lines[1:]
        return "\n".join(lines)

    def protocols(self) -> dict[str, str]:
        """Protocol name -> its state: a BGP session's words ("Established", "Active",
        "Passive", "Connect", "OpenSent", "Idle"...), else BIRD's up/down/start."""
        out: dict[str, str] = {}
        for line in self.cmd("show", "protocols").splitlines()[1:]:
            cols = line.split()
            if len(cols) < 5:
                continue
            name, proto, state = cols[0], cols[1], cols[3]
            info = cols[5] if len(cols) > 5 and proto == "BGP" else ""
            out[name] = info or state
        return out

    def last_error(self, name: str) -> str:
        """A protocol's "Last error" line (the reason a session went down), "" if none."""
        for line in self.cmd("show", "protocols", "all", name).splitlines():
            line = line.strip()
            if line.startswith("Last error:"):
                return line.split(":", 1)[1].strip()
        return ""

    def next_hops(self, prefix: str) -> list[str]:
        """The next hops BIRD has for exactly `prefix` (every route's, sorted); [] = no
        route."""
        net = str(ipaddress.ip_network(prefix, strict=False))
        try:
            text = self.cmd("show", "route", net)
        except LabError as e:
            if "Network not found" in str(e):
                return []
            raise
        return sorted(set(_VIA.findall(text)))

    def wait(self, prefix: str, hops: int, timeout: float) -> list[str]:
        """Poll until `prefix` has exactly `hops` next hops; the last answer after
        `timeout` seconds otherwise (the caller asserts)."""
        deadline = time.monotonic() + timeout
        while True:
            got = self.next_hops(prefix)
            if len(got) == hops or time.monotonic() > deadline:
                return got
            time.sleep(0.1)
