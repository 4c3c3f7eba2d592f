"""DSR vs SNAT on the same lab traffic, side by side; and the XDP attach-mode switch's gap.

Usage: sudo flock /tmp/xlb-lab.lock .venv/bin/python bench/modes.py [--runs 2]
       [--seconds 8] [--rate 150] [--json]

Brings THE lab up (its `up` time is printed), then `--runs` rounds, each DSR then SNAT
(every lab VIP switched on both LBs), of `--seconds` of new TCP connections (HTTP GET,
`--rate` per second, a quarter over IPv6, no UDP) from the client namespace. Per mode:
request latency p50/p99 as the client measured it (connect to answer), and the LBs' CPU
per connection: the run time of both LBs' XDP programs (the kernel's BPF run-time
statistics, on while this runs) over the connections made, with the packets per
connection the LBs handled (DSR: the client's packets only; SNAT: the replies too). The
XDP program's run time does not include the driver's transmit (XDP_TX) nor the router's
extra hop for SNAT replies: the latency columns do.

Then the XDP switch: both LBs native -> generic -> native (2 s apart) under the lab's
traffic (`--rate` connections/s with UDP, 8 + 8 long-lived connections, a numbered UDP
stream of 1000 queries/s over 16 flows): each switch's gap (detach -> attach, as the
agent measured it), UDP queries lost, the longest outage one flow saw, long-lived
connections broken. The lab is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xlb.dataplane import bpfsys, xdp  # noqa: E402
from xlb.lab import modes, run, switches  # noqa: E402
from xlb.lab.topology import VIPS, Lab  # noqa: E402


def lb_runtime(lab: Lab) -> tuple[int, int]:
    """Both LBs' XDP programs: (run time ns, runs) so far."""
    t = n = 0
    for lb in lab.lbs:
        info = bpfsys.prog_info_by_id(xdp.query("l0", lab.lb_ns(lb)).prog_id)
        if info is not None:
            t, n = t + int(info.run_time_ns), n + int(info.run_cnt)
    return t, n


def one(mode: str, seconds: float, rate: float, lab: Lab) -> dict[str, Any]:
    for name in VIPS:
        switches.call_lbs("mode", {"vip": name, "mode": mode})
    before, (t0, n0) = modes.packets(lab), lb_runtime(lab)
    gen = run.traffic(["--rate", str(rate), "--duration", str(seconds), "--udp-every", "0",
                       "--json"], quiet=True)
    out, _ = gen.communicate(timeout=seconds + 60)
    t1, n1 = lb_runtime(lab)
    moved = modes.delta(before, modes.packets(lab))
    s = json.loads(out.decode().strip().splitlines()[-1])
    conns = max(1, s["tcp_ok"])
    return {"mode": mode, "connections": s["tcp_ok"], "failed": s["tcp_failed"],
            "p50_ms": s["latency_ms"]["p50"], "p99_ms": s["latency_ms"]["p99"],
            "lb_ns_per_conn": round((t1 - t0) / conns), "lb_pkts_per_conn": round(
                (n1 - n0) / conns, 1), "lb_ns_per_pkt": round((t1 - t0) / max(1, n1 - n0), 1),
            "forwarded": {k: sum(m[k] for m in moved.values()) for k in
                          ("dsr", "snat", "snat_reply")}}


def table(rows: list[dict[str, Any]]) -> str:
    cols = ("p50_ms", "p99_ms", "lb_ns_per_conn", "lb_pkts_per_conn", "lb_ns_per_pkt")
    med = {m: {c: statistics.median(r[c] for r in rows if r["mode"] == m) for c in cols}
           for m in ("dsr", "snat")}
    lines = [f"{'(median of runs)':<18}{'DSR':>12}{'SNAT':>12}"]
    names = {"p50_ms": "latency p50 ms", "p99_ms": "latency p99 ms",
             "lb_ns_per_conn": "LB ns/conn", "lb_pkts_per_conn": "LB pkts/conn",
             "lb_ns_per_pkt": "LB ns/pkt"}
    lines += [f"{names[c]:<18}{med['dsr'][c]:>12g}{med['snat'][c]:>12g}" for c in cols]
    return "\n".join(lines)


def xdp_switch(rate: float) -> dict[str, Any]:
    r = switches.measure([("xdp_mode", {"mode": "generic"}), ("xdp_mode", {"mode": "native"})],
                         rate=rate, hold=2.0, connections=8, stream_rate=1000.0)
    return {"gaps_s": {f"{s['params']['mode']}@{lb}": a["gap_seconds"]
                       for s in r["steps"] for lb, a in s["lbs"].items()},
            "stream": r["stream"], "long_lived_broken": r["broken"],
            "long_lived": r["long_lived"]["connections"], "new_failed": r["new_failed"],
            "new_ok": r["new_ok"], "slowest_request_ms": r["slowest_request_ms"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rate", type=float, default=150.0)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    lab = Lab()
    up = run.up()
    stats = bpfsys.enable_stats()  # run-time statistics while this runs
    rows: list[dict[str, Any]] = []
    try:
        print(f"lab up in {up['seconds']} s", flush=True)
        for i in range(a.runs):
            for mode in ("dsr", "snat"):
                rows.append(one(mode, a.seconds, a.rate, lab) | {"run": i + 1})
                if not a.json:
                    r = rows[-1]
                    print(f"run {i + 1} {mode:<4}: {r['connections']} conns ({r['failed']} "
                          f"failed), p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; LBs "
                          f"{r['lb_ns_per_conn']} ns/conn over {r['lb_pkts_per_conn']} "
                          f"pkts/conn; forwarded {r['forwarded']}", flush=True)
        for name in VIPS:
            switches.call_lbs("mode", {"vip": name, "mode": "dsr"})
        switch = xdp_switch(a.rate)
    finally:
        os.close(stats)
        run.down()
    if a.json:
        print(json.dumps({"lab_up_s": up["seconds"], "runs": rows, "xdp_switch": switch},
                         indent=1))
        return 0
    print(table(rows))
    st = switch["stream"]
    print(f"XDP native->generic->native on both LBs: gaps {switch['gaps_s']} s; UDP stream "
          f"{st['rate']:g}/s over {st['flows']} flows: lost {st['lost']} of {st['sent']}, "
          f"longest outage of a flow {st['longest_outage_ms']} ms; long-lived broken "
          f"{switch['long_lived_broken']} of {switch['long_lived']}; new TCP failed "
          f"{switch['new_failed']} of {switch['new_ok'] + switch['new_failed']}; slowest "
          f"request {switch['slowest_request_ms']} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
