"""The lab's BPF programs under live traffic: ns per run and runs per second, from the kernel.

Usage: sudo flock /tmp/xlb-lab.lock .venv/bin/python bench/live.py [--seconds 10]
       [--rate 100000] [--concurrency 256] [--udp-every 1] [--json]

Reuses THE lab if it is up (and leaves it up), else brings it up and takes it down at the
end; either way it says which. Turns the kernel's BPF run-time statistics on for its own
run (BPF_ENABLE_STATS: off again when it ends, however it ends; the kernel.bpf_stats_enabled
sysctl is not touched), runs `xlb lab traffic` with a rate no generator reaches (so as fast
as the client can open connections, at most --concurrency at once) and, after a second of
warm-up, reads every lab program's run time and run count over --seconds:

* lb1 / lb2: each LB's XDP program (xlb.c), which balances and encapsulates;
* decap: the backends' program (decap.c, one program on the three backends' links);
* pass: the router's program on its LB-facing links (pass.c: XDP_PASS, there so that the
  LBs' XDP_TX on a veth works).

Per program: runs/s, ns per run (run time / runs over the window) and % of one CPU. Also
what drove it: connections and UDP queries per second, the generator's CPU and the
machine's (all CPUs, /proc/stat: busy, softirq, steal), so what limited the rate shows.
These are real-traffic figures beside bench/dataplane.py's BPF_PROG_TEST_RUN ones: veth
XDP, cache-cold, interleaved with the kernel's TCP stacks of four namespaces.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.dataplane import bpfsys, xdp  # noqa: E402
from xlb.lab import run  # noqa: E402
from xlb.lab.topology import ROUTER, Lab  # noqa: E402

WARMUP_S = 1.0


def lab_is_up(status: dict[str, Any]) -> bool:
    """Every namespace there, every LB loaded and its agent alive (`run.status()`'s shape)."""
    return (all(status["namespaces"].values()) and all(status["lbs"].values())
            and bool(status["agents"]) and all(status["agents"].values()))


def programs(lab: Lab) -> dict[str, int]:
    """Role -> program id of the lab's XDP programs, as attached now."""
    ids = {lb: xdp.query("l0", lab.lb_ns(lb)).prog_id for lb in lab.lbs}
    ids["decap"] = xdp.query("b0", lab.backends[0].name).prog_id
    ids["pass"] = xdp.query(f"r-{lab.lbs[0]}", ROUTER).prog_id
    return ids


def sample(ids: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Role -> (run_time_ns, run_cnt) now (a program gone: left out)."""
    out = {}
    for role, pid in ids.items():
        info = bpfsys.prog_info_by_id(pid) if pid else None
        if info is not None:
            out[role] = (int(info.run_time_ns), int(info.run_cnt))
    return out


def rates(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
          seconds: float) -> dict[str, dict[str, float]]:
    """Per role over the window: runs/s, ns per run and % of one CPU."""
    out = {}
    for role in before.keys() & after.keys():
        dt = after[role][0] - before[role][0]
        dn = after[role][1] - before[role][1]
        out[role] = {"runs": dn, "runs_per_s": round(dn / seconds, 1),
                     "ns_per_run": round(dt / dn, 1) if dn else 0.0,
                     "cpu_percent": round(dt / seconds / 1e7, 2)}
    return out


def process_ticks(pid: int) -> int:
    """CPU clock ticks (user + system) a process has used."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def machine_ticks() -> list[int]:
    """The machine's clock ticks so far: user nice system idle iowait irq softirq steal ..."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def machine_share(before: list[int], after: list[int]) -> dict[str, float]:
    """% of all CPUs over the window: busy (not idle/iowait), of it softirq (packets) and
    steal (the hypervisor's other guests)."""
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = max(1, sum(d))
    return {"busy": round((total - d[3] - d[4]) / total * 100, 1),
            "softirq": round(d[6] / total * 100, 1), "steal": round(d[7] / total * 100, 1)}


def measure(seconds: float, rate: float, concurrency: int, udp_every: int) -> dict[str, Any]:
    lab = Lab()
    ids = programs(lab)
    gen = run.traffic(["--rate", str(rate), "--concurrency", str(concurrency),
                       "--udp-every", str(udp_every), "--json"], quiet=True)
    try:
        time.sleep(WARMUP_S)
        hz = os.sysconf("SC_CLK_TCK")
        g0, m0 = process_ticks(gen.pid), machine_ticks()
        s0, w0 = sample(ids), time.monotonic()
        time.sleep(seconds)
        s1, w1 = sample(ids), time.monotonic()
        g1, m1 = process_ticks(gen.pid), machine_ticks()
    finally:
        summary = run.stop_traffic(gen)
    window = w1 - w0
    return {"window_s": round(window, 2), "program_ids": ids,
            "programs": rates(s0, s1, window),
            "generator_cpu_percent": round((g1 - g0) / hz / window * 100, 1),
            "machine_cpu_percent": machine_share(m0, m1),
            "cpus": os.cpu_count(), "traffic": summary}


def render(r: dict[str, Any]) -> str:
    t, mc = r["traffic"], r["machine_cpu_percent"]
    secs = t.get("seconds") or 1
    lines = [
        f"lab: {r['lab']}; window {r['window_s']} s after {WARMUP_S:g} s of warm-up; "
        f"generator --rate {r['rate']:g} --concurrency {r['concurrency']} "
        f"--udp-every {r['udp_every']}",
        f"traffic: {t.get('connections_per_second', 0)} TCP conn/s "
        f"({t.get('tcp_failed', 0)} failed{': ' if t.get('errors') else ''}"
        f"{t.get('errors') or ''}), "
        f"{round(t.get('udp_ok', 0) / secs, 1)} UDP queries/s",
        f"CPU: generator {r['generator_cpu_percent']}% of one; machine (all {r['cpus']}) busy "
        f"{mc['busy']}%, of which softirq {mc['softirq']}%, steal {mc['steal']}%",
        "",
        f"{'program':<8}{'id':>7}{'runs/s':>11}{'ns/run':>9}{'% CPU':>8}",
    ]
    for role, pid in r["program_ids"].items():
        p = r["programs"].get(role)
        if p is None:
            lines.append(f"{role:<8}{pid:>7}  (not attached)")
            continue
        lines.append(f"{role:<8}{pid:>7}{p['runs_per_s']:>11g}{p['ns_per_run']:>9g}"
                     f"{p['cpu_percent']:>8g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    p.add_argument("--rate", type=float, default=100000.0,
                   help="the generator's --rate (default 100000: as fast as it can)")
    p.add_argument("--concurrency", type=int, default=256,
                   help="the generator's --concurrency (default 256)")
    p.add_argument("--udp-every", type=int, default=1,
                   help="the generator's --udp-every (default 1; 0: TCP only)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    a = p.parse_args(argv)
    reuse = lab_is_up(run.status())
    stats = bpfsys.enable_stats()
    try:
        if not reuse:
            up = run.up()
            if not a.json:
                print(f"lab brought up in {up['seconds']} s", flush=True)
        r = measure(a.seconds, a.rate, a.concurrency, a.udp_every)
    finally:
        os.close(stats)
        if not reuse:
            run.down()
    r |= {"lab": "reused (was up; left up)" if reuse else "brought up, then down",
          "rate": a.rate, "concurrency": a.concurrency, "udp_every": a.udp_every}
    print(json.dumps(r, indent=1) if a.json else render(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
