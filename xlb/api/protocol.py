"""The agent's API, written down once: like katran.proto, one schema for the server and
every client.

Transport: JSON-RPC 2.0, one JSON object per line (at most MAX_LINE bytes), on the
agent's Unix socket. A request without an id is a notification: it runs (with the same
rights and audit as any request) and is never answered. A batch, an array of at most
MAX_BATCH requests on one line, is answered with one array (no entry for its
notifications; no line at all if it held only notifications). Who may change things is
decided by the peer's credentials (SO_PEERCRED): root and members of the operator group
are operators, anyone else who can open the socket is read-only.

This module is the single source for the method names, their parameters, which
methods need an operator, the error codes, the verdict reasons and the shapes
(TypedDicts) of every answer and notification. The agent dispatches from METHODS;
the client, the CLI, the console and the test double read it. It imports neither
the data plane nor Textual; every later feature adds its methods and fields here.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Union

from xlb.addresses import canonical_address
from xlb.errors import ErrorCode, InvalidParams

__all__ = ["ErrorCode", "METHODS", "MISSES", "NOTIFICATIONS", "REASONS", "Method", "Param"]

JSONRPC = "2.0"
MAX_LINE = 1 << 16  # bytes in one request line
MAX_BATCH = 64      # requests in one batch (an array on one line)
MAX_AUDIT = 1000    # entries one `audit` call may ask for
AUDIT_BYTES = 1 << 20  # at most this much of the log (the newest records) answers one call
MAX_WEIGHT = 65535  # a backend's weight is 0..MAX_WEIGHT (16 bits in the Maglev build)

# -- verdict reasons ---------------------------------------------------------------------
# Why the data plane gave a packet its verdict, in the order of enum xlb_reason
# (bpf/xlb_shared.h; a test checks the two agree). The label's first word is its kind.
REASONS: dict[str, str] = {
    "pass_not_ip": "neither IPv4 nor IPv6",
    "pass_not_vip": "destination is not a VIP address: the host's own traffic",
    "pass_vip_no_service": "VIP address, but no VIP on that port and protocol",
    "pass_vip_other_proto": "VIP address, not TCP, UDP, a ping or an ICMP error about a flow",
    "drop_malformed": "truncated or inconsistent headers",
    "drop_fragment": "a fragment to a VIP (IPv4, or an IPv6 fragment header anywhere)",
    "drop_ip_options": "IPv4 options or IPv6 extension headers to a VIP",
    "drop_no_backend": "the VIP has no usable backend",
    "drop_adjust_failed": "the kernel refused to grow or shrink the frame",
    "tx_icmp_too_big": "too big after encapsulation: ICMP 'fragmentation needed' answered",
    "tx_encap": "balanced: encapsulated to a backend",
    "tx_encap_no_entry": "TCP, not a SYN, of no known connection: balanced by Maglev, "
                         "no entry made (an ACK flood, or a connection the table lost)",
    "tx_encap_flow_limit": "new flow over the new-entry limit: balanced by Maglev, no entry "
                           "made (the connection table is being protected)",
    "tx_encap_icmp_error": "ICMP error about a VIP flow (unreachable, too big): sent to "
                           "the flow's backend",
    "tx_icmp_echo": "ping to a VIP address: answered by the load balancer",
    "drop_icmp_too_big": "ICMP error about a VIP flow, too big for mtu once encapsulated",
    "tx_snat": "SNAT: translated (source = the LB's SNAT address and port, destination = "
               "the backend) and sent to the backend",
    "tx_snat_reply": "SNAT: a backend's reply, translated back (source = the VIP, "
                     "destination = the client) and sent to the client",
    "drop_snat_no_port": "SNAT: a new flow found no free SNAT address and port (the pool "
                         "is exhausted for that backend)",
    "drop_snat_flow_limit": "SNAT: a new flow over the new-entry limit (a SNAT flow needs "
                            "a connection entry)",
    "drop_snat_no_entry": "SNAT: to a SNAT address and port of no translation (expired, or "
                          "never made), or TCP of a SNAT flow whose translation was freed",
}
# Connection-table misses by kind, in the order of enum xlb_miss (a test checks). Counted
# apart from the verdict: Katran's split, since the two mean opposite things.
MISSES: dict[str, str] = {
    "tcp_syn": "a TCP SYN: a new connection (a SYN always asks Maglev)",
    "tcp_non_syn": "TCP, not a SYN, of no known connection: a flow whose state this LB lost "
                   "(maps remade, entry evicted, another LB carried it until now) or made-up "
                   "packets (an ACK flood)",
    "udp": "UDP of no known flow: a new flow, or one whose entry was evicted",
}
ReasonKind = Literal["drop", "tx", "pass"]
KIND_ORDER: dict[str, int] = {"drop": 0, "tx": 1, "pass": 2}  # how people see them listed


def reason_kind(label: str) -> ReasonKind:
    """"drop", "tx" or "pass": the verdict of a reason, from its label."""
    kind = label.split("_", 1)[0]
    if kind not in KIND_ORDER:
        raise ValueError(f"{label!r} is not a verdict reason")
    return kind  # type: ignore[return-value]


def reason_order(label: str) -> tuple[int, str]:
    """Sort key: drops first, then transmits, then passes."""
    return KIND_ORDER[reason_kind(label)], label


# -- shapes of answers and notifications -----------------------------------------------
BackendState = Literal["active", "draining", "drained", "down"]
ConfiguredState = Literal["active", "drained"]
# How a VIP forwards new flows: "dsr" (IP-in-IP to the backend, replies go straight to
# the client) or "snat" (addresses rewritten, replies come back through the LB).
Mode = Literal["dsr", "snat"]
MODES: dict[str, str] = {
    "dsr": "direct server return: packets go IP-in-IP to the backend, which answers the "
           "client itself (needs the decapsulation and the VIP on the backends)",
    "snat": "source NAT: the LB rewrites the addresses, the backend sees the LB's SNAT "
            "address and answers it, the LB translates the reply back (backends need "
            "nothing; replies cross the LB)",
}
XdpMode = Literal["native", "generic"]


class Totals(TypedDict):
    pps: float       # packets per second seen by XDP, all queues
    bps: float       # bits per second
    drop_pps: float  # XDP_DROP + XDP_ABORTED per second


class Cpu(TypedDict):
    busy: float      # percent since the previous tick
    softirq: float   # percent in softirq (where XDP runs)


class Backend(TypedDict):
    """One backend of one VIP, as the agent sees it this tick."""

    address: str
    weight: int
    state: BackendState           # active, draining (drained, still carrying flows), ...
    health: str                   # "up", or why it is down
    ring_share: float             # share of the VIP's Maglev table, 0..1
    pps: float
    new_connections_per_s: float
    active_connections: int       # flows seen in the last complete ~8.6 s epoch
    changed: float                # when its state or health last changed (0 = never)


class VipModes(TypedDict):
    """A VIP's traffic by forwarding mode, this tick (established flows keep the mode
    they started in, so both can be non-zero after a switch)."""

    dsr_pps: float                # client packets forwarded IP-in-IP
    snat_pps: float               # client packets translated to a backend
    reply_pps: float              # backends' replies translated back (SNAT)
    translations_per_s: float     # SNAT (address, port) claimed for new flows
    no_port: int                  # new SNAT flows dropped for want of a port, ever


class Vip(TypedDict):
    name: str
    vip: str                      # address:port/protocol, [v6]:port/protocol
    mode: Mode                    # how NEW flows are forwarded
    modes: VipModes
    backends: list[Backend]
    pps: float
    active_connections: int       # sum over its backends
    healthy: int
    total: int
    panic: bool                   # failing open: too few healthy, so all serving take flows


class VipSummary(TypedDict):
    name: str
    vip: str
    mode: Mode
    pps: float
    healthy: int
    total: int
    panic: bool


class Alarm(TypedDict):
    """Something the agent owns was changed under it (its XDP program, its pins)."""

    what: str          # attach | pins
    since: float
    message: str       # what happened, and what the agent did about it
    active: bool       # False: put right (restored); shown for a while all the same


# -- the kernel around the load balancer (the probes) --------------------------------------
ProbeState = Literal["attached", "unavailable", "off"]
PROBES = ("drops", "xdp", "napi", "softirq", "tcp", "runtime")  # names, in listing order


class Probe(TypedDict):
    """One probe as `xlb probes` and the Probes view show it."""

    name: str                     # one of PROBES
    kind: str                     # tracepoint | kprobe | raw_tracepoint | bpf_stats
    target: str                   # what it attaches to (after any fallback)
    state: ProbeState
    reason: str                   # unavailable: why; attached: a fallback or a missing part
    doc: str                      # one line: what it shows
    needs: str                    # what it needs from the kernel
    feeds: str                    # what it fills in (snapshot fields, metrics)
    events_per_s: float           # runs of its programs per second (events it counted when
                                  # run-time stats are off)
    ns_per_run: float | None      # average cost of one run (None: run-time stats off)
    cpu_percent: float | None     # % of one CPU its programs took (None: stats off)


class Packet(TypedDict):
    """A dropped (or reset, retransmitted) packet's 5-tuple, as an example."""

    time: float                   # Unix time
    protocol: str                 # tcp, udp, icmp, icmpv6, or the number
    src: str
    sport: int
    dst: str
    dport: int


class KernelDrop(TypedDict):
    """Packets the kernel freed with one drop reason (skb:kfree_skb)."""

    reason: str                   # the running kernel's own name (NO_SOCKET, ...)
    code: int                     # its number in this kernel
    per_s: float
    total: int                    # since the probe attached
    lb_total: int                 # of them, from or to a VIP or backend of this instance
    addresses: dict[str, int]     # VIP/backend address -> drops from or to it
    examples: list[Packet]        # the last few, newest first


XdpErrorKind = Literal["exception", "redirect_error", "redirect_map_error"]


class XdpError(TypedDict):
    """XDP exceptions and redirect errors of one program on one interface."""

    kind: XdpErrorKind
    prog_id: int
    program: str                  # the program's name ("" if it is gone)
    interface: str                # name (and namespace) if found, else "ifindex N"
    action: str                   # ABORTED, DROP, PASS, TX, REDIRECT or the number
    per_s: float
    total: int


class NapiQueue(TypedDict):
    """One NAPI instance (a device's RX queue) on one CPU."""

    device: str
    napi_id: int                  # the kernel's id of the NAPI instance (SO_INCOMING_NAPI_ID;
                                  # 0 if it has none): tells one device's queues apart
    cpu: int
    polls_per_s: float
    packets_per_poll: float
    budget_exhausted: float       # share of polls that used the whole budget, 0..1
    polls: int                    # since the probe attached
    packets: int                  # since the probe attached
    exhausted: int                # polls that used the whole budget, since attached


class SoftirqCpu(TypedDict):
    cpu: int
    percent: float                # of this CPU's time in NET_RX softirq
    runs_per_s: float
    seconds: float                # in NET_RX softirq since the probe attached


class TcpEvent(TypedDict):
    kind: Literal["reset", "retransmit"]
    reason: str                   # a reset's reason where the kernel says it, else ""
    per_s: float
    total: int


class Program(TypedDict):
    """One BPF program on the host, from the kernel's run-time statistics."""

    id: int
    name: str
    type: int                     # enum bpf_prog_type
    owner: str                    # "xlb" (this instance's XDP), "probe NAME", or ""
    runs_per_s: float
    ns_per_run: float
    cpu_percent: float            # % of one CPU
    runs: int                     # since the kernel's statistics were turned on
    run_time_ns: int


class Kernel(TypedDict):
    """What the probes see; a probe that is not attached leaves its lists empty."""

    probes: list[Probe]
    drops: list[KernelDrop]       # by reason, busiest first
    drops_since: float            # Unix time the drops probe attached (0: not attached)
    xdp_errors: list[XdpError]
    napi: list[NapiQueue]
    softirq: list[SoftirqCpu]     # per CPU (empty: not attached; use cpus[].softirq)
    tcp: list[TcpEvent]
    tcp_examples: list[Packet]    # the last few resets and retransmits, newest first
    programs: list[Program]       # busiest first (at most MAX_PROGRAMS)


MAX_PROGRAMS = 64


def empty_kernel() -> Kernel:
    return {"probes": [], "drops": [], "drops_since": 0.0, "xdp_errors": [], "napi": [],
            "softirq": [], "tcp": [], "tcp_examples": [], "programs": []}


# -- BGP: route health injection (xlb/bgp) ------------------------------------------------------
# A neighbor's session as ExaBGP reports it: "idle" (not connected yet, or ExaBGP starting),
# "connected" (TCP up, OPEN exchange), "established" (routes flow), "down" (lost: last_error
# says why; ExaBGP tries again).
BgpSessionState = Literal["idle", "connected", "established", "down"]
# The ExaBGP process the agent supervises: "off" (no [bgp] table), "starting", "running",
# "restarting" (it died; started again after a back-off), "failed" (cannot be started:
# last_error of the Bgp document says why).
BgpSpeakerState = Literal["off", "starting", "running", "restarting", "failed"]
# Why a prefix is announced or withdrawn: "serving" (announced: a VIP at the address has a
# healthy, undrained backend), "no_backend" (withdrawn: none has), "operator" (withdrawn by an
# operator: bgp_withdraw VIP), "maintenance" (withdrawn: the whole LB is in maintenance),
# "not_announced" (the [bgp] announce list leaves its VIPs out).
BgpCause = Literal["serving", "no_backend", "operator", "maintenance", "not_announced"]
BgpEventKind = Literal["session", "announce", "withdraw", "speaker", "notification",
                       "operator"]
MAX_BGP_EVENTS = 200  # the event log the snapshot carries (newest last)


class BgpNeighbor(TypedDict):
    """One BGP neighbor ([[bgp.neighbor]]) and its session."""

    peer: str                     # the neighbor's address
    local_address: str            # ours ("" = chosen by the kernel)
    peer_asn: int
    local_asn: int
    family: str                   # "ipv4 unicast" | "ipv6 unicast": the prefixes it is sent
    state: BgpSessionState
    since: float                  # Unix time of the last state change (0 = none yet)
    uptime: float                 # seconds established (0 unless established)
    last_error: str               # the last down reason or notification, the peer's words
    updates_sent: int             # UPDATE messages, since the agent started
    updates_received: int


class BgpPrefix(TypedDict):
    """One VIP address as a BGP prefix (/32 or /128): every VIP at that address."""

    prefix: str                   # 198.19.0.10/32, fd00::10/128
    vips: list[str]               # the names of the VIPs at the address
    announced: bool               # offered to the neighbors of its family
    cause: BgpCause
    reason: str                   # for people: why announced or withdrawn, with who and when
    since: float                  # Unix time announced or withdrawn
    peers: list[str]              # neighbors that carry it now (established, its family)


class BgpEvent(TypedDict):
    time: float
    kind: BgpEventKind
    peer: str                     # the neighbor concerned ("" = none)
    message: str                  # for people


class Bgp(TypedDict):
    """The BGP speaker of one instance: what `xlb bgp` and the BGP view show."""

    enabled: bool                 # False: no [bgp] table; everything else is empty
    speaker: BgpSpeakerState
    pid: int                      # ExaBGP's process (0 = none)
    restarts: int                 # times ExaBGP was started again after it died
    last_error: str               # why ExaBGP last died or could not start ("" = never)
    local_asn: int
    router_id: str
    maintenance: bool             # every prefix withdrawn by an operator (bgp_withdraw all)
    maintenance_by: str           # who put the LB in maintenance, and when ("" = not)
    neighbors: list[BgpNeighbor]
    prefixes: list[BgpPrefix]
    events: list[BgpEvent]        # newest last, at most MAX_BGP_EVENTS


def empty_bgp() -> Bgp:
    """An instance without a [bgp] table."""
    return {"enabled": False, "speaker": "off", "pid": 0, "restarts": 0, "last_error": "",
            "local_asn": 0, "router_id": "", "maintenance": False, "maintenance_by": "",
            "neighbors": [], "prefixes": [], "events": []}


class BgpChange(TypedDict):
    """The answer to bgp_withdraw / bgp_announce: the prefixes it touched, after it."""

    changed: bool                 # False: it was so already
    maintenance: bool
    prefixes: list[BgpPrefix]     # the prefixes named (all of them for `all`)


class Snat(TypedDict):
    """The instance's SNAT settings ([instance] snat_*), for the views."""

    pool_v4: str | None               # CIDR, None = no IPv4 pool (no IPv4 VIP may use SNAT)
    pool_v6: str | None
    port_min: int
    port_max: int
    table_size: int                   # translations the reverse table holds


class Snapshot(TypedDict):
    """Everything the console draws, once per tick."""

    instance: str
    host: str
    lb_mode: str                      # the VIPs' modes: "dsr", "snat" or "dsr+snat"
    time: float                       # agent's clock (Unix time)
    uptime: float                     # seconds since the agent started
    xdp_mode: str | None              # native, generic (None before the first attach)
    xdp_native: bool | None           # can the interface's driver run native XDP (None:
                                      # unknown); the Overview says so when it cannot
    snat: Snat
    interface: str | None
    metrics_port: int                 # 0 = no exporter
    totals: Totals
    queues: list[float]               # pps per RX queue, up to the highest seen busy
    reasons: dict[str, float]         # per second, by REASONS label
    reason_totals: dict[str, int]     # packets since the maps were made
    misses: dict[str, float]          # connection-table misses per second, by MISSES kind
    cpus: list[Cpu]
    vips: list[Vip]
    alarms: list[Alarm]               # in force, or put right in the last 10 minutes
    tick_failures: int                # ticks that failed since the agent started (logged)
    kernel: Kernel                    # what the probes see (xlb probes, the Probes view)
    bgp: Bgp                          # the BGP speaker: sessions, prefixes, events


class ProbeChange(TypedDict):
    """The answer to probe_attach / probe_detach."""

    probe: Probe                  # its state after the change
    changed: bool                 # False: it was so already


# -- flow traces and explain ------------------------------------------------------------------
# How the data plane chose a packet's backend, in the order of enum xlb_path
# (bpf/xlb_shared.h; a test checks the two agree).
PATHS: dict[str, str] = {
    "none": "no backend chosen (not a VIP flow, answered, or dropped before balancing)",
    "conn": "connection-table hit: the flow's recorded backend",
    "maglev": "no connection entry: Maglev picked the backend (a new flow)",
    "maglev_syn": "a TCP SYN: Maglev picked the backend (a SYN always asks Maglev)",
    "maglev_stale": "the entry's backend is gone: Maglev re-picked and the entry was updated",
}
TracePath = Literal["none", "conn", "maglev", "maglev_syn", "maglev_stale"]
TraceSource = Literal["xdp", "kernel"]
MAX_TRACE_SECONDS = 3600   # a trace stops by itself after at most this long
DEFAULT_TRACE_SECONDS = 300
MAX_TRACE_EVENTS = 10000   # events one trace_events call (or a new watcher's history) may ask for


class TraceEvent(TypedDict):
    """What the data plane (source "xdp") or the kernel (source "kernel": a kernel drop of a
    traced flow, from the drops probe) did to one packet."""

    source: TraceSource
    time: float                   # Unix time
    cpu: int
    queue: int                    # RX queue (-1 for kernel drops)
    interface: str                # name, or "ifindex N"
    protocol: str                 # tcp, udp, icmp, icmpv6, or the number
    src: str
    sport: int
    dst: str
    dport: int
    vip: str | None               # the VIP's name (None: not a VIP flow)
    backend: str | None           # the chosen backend's address (None: none chosen)
    path: TracePath
    action: str                   # DROP, PASS, TX, ABORTED, REDIRECT
    reason: str                   # a REASONS label (xdp), or the kernel's drop reason name
    length: int                   # bytes of the frame as it arrived
    outer_src: str | None         # outer source address when encapsulated


class TraceStatus(TypedDict):
    """The one trace of an instance (several clients may watch it)."""

    running: bool
    filter: str                   # canonical filter text ("" = every packet)
    sample: int                   # 1-in-N of the matching packets (1 = all)
    started: float                # Unix time (0: never started)
    expires: float                # Unix time it stops by itself (0: not running)
    by: str                       # who started it
    events: int                   # events read since it started
    lost: int                     # events the data plane could not write (ring buffer full)
    skipped: int                  # events not forwarded to watchers (rate limit)
    per_s: float                  # events read per second, lately
    history: int                  # events held in the recent history


class TraceBatch(TypedDict):
    """Params of the "trace" notification: new events (oldest first) for one watcher."""

    events: list[TraceEvent]
    skipped: int                  # events this watcher did not get since the last batch
    status: TraceStatus


class ExplainStep(TypedDict):
    step: str                     # vip | service | connection | hash | maglev | backend |
                                  # encap | snat | verdict
    text: str                     # one line for people


class _ExplainFields(TypedDict):
    flow: str                     # "SRC:SPORT -> DST:DPORT/proto"
    vip: str | None
    backend: str | None
    path: TracePath
    reason: str                   # the REASONS label it would count
    action: str                   # DROP, PASS, TX
    hash: int | None              # the flow hash (None: not a VIP flow)
    slot: int | None              # the Maglev slot (None: no Maglev step)
    outer_src: str | None
    connection_age: float | None  # seconds since the entry last saw a packet (None: none)
    steps: list[ExplainStep]


class Explain(_ExplainFields, total=False):
    """What the data plane would do with one flow, read from its maps (no packet sent)."""

    shares: dict[str, float]      # only without a source port: backend address -> its
                                  # share of the source ports (0..1)


class Caller(TypedDict):
    user: str
    operator: bool


class Status(Snapshot):
    caller: Caller                    # who asked, and whether they may change things


class BackendConfig(TypedDict):
    """A backend as configured ([[vip.backend]])."""

    address: str
    weight: int
    state: ConfiguredState


class VipConfig(TypedDict):
    """A VIP as configured ([[vip]])."""

    name: str
    address: str
    port: int
    protocol: str
    mode: Mode
    backend: list[BackendConfig]


class XdpModeChange(TypedDict):
    """The answer to xdp_mode: the program re-attached in the other mode."""

    interface: str
    before: XdpMode
    after: XdpMode
    gap_seconds: float                # from the detach to the attach: packets in it met
                                      # no XDP program (the kernel's own path)


class ChangeResult(TypedDict):
    """The answer to every change: what it touched, per VIP name (None where absent)."""

    vips: list[str]
    before: dict[str, Any]  # BackendConfig or VipConfig or None
    after: dict[str, Any]


class AuditEntry(TypedDict):
    time: float
    uid: int
    user: str
    action: str             # the method
    params: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    result: str             # "ok" (applied), or "refused: ..." (an attempt, nothing changed)


class Subscribed(TypedDict):
    subscribed: bool
    tick: float             # seconds between snapshots


class ChangeEvent(AuditEntry):
    kind: Literal["change"]


class HealthEvent(TypedDict):
    kind: Literal["health"]
    time: float
    address: str
    healthy: bool
    reason: str


class ErrorEvent(TypedDict):
    kind: Literal["error"]
    time: float
    message: str


class AlarmEvent(TypedDict):
    kind: Literal["alarm"]
    time: float
    what: str
    message: str
    cleared: bool      # True: over (or put right at once), False: raised


class PanicEvent(TypedDict):
    """A VIP starts (panic true) or stops failing open: with too few healthy backends it
    sends new flows to all its serving backends, down or not."""

    kind: Literal["panic"]
    time: float
    vip: str                # the VIP's name
    panic: bool
    healthy: int            # serving backends that pass their checks
    serving: int            # active backends with weight > 0
    message: str            # for people: what happens and why


Event = ChangeEvent | HealthEvent | ErrorEvent | AlarmEvent | PanicEvent

# notification method -> its params' shape
NOTIFICATIONS: dict[str, Any] = {"snapshot": Snapshot, "event": Event, "trace": TraceBatch}


def change_text(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A change's before and after (ChangeResult, AuditEntry) for people, per VIP:
    "web: weight 1 → 7", "web: added (weight 2, active)", "api: removed"."""
    parts = []
    for vip in dict.fromkeys([*before, *after]):
        old, new = before.get(vip), after.get(vip)
        if new is None:
            parts.append(f"{vip}: removed" if old is not None else f"{vip}: absent")
        elif old is None:
            parts.append(f"{vip}: added ({_table_text(new)})")
        else:
            diff = [f"{k} {old.get(k)} → {v}" for k, v in new.items()
                    if k != "backend" and old.get(k) != v]
            if "backend" in new:
                diff += _backends_text(old.get("backend", []), new["backend"])
            parts.append(f"{vip}: {', '.join(diff) or 'unchanged'}")
    return "; ".join(parts) or "nothing"


def entry_text(e: AuditEntry) -> str:
    """What an audit entry did, for people: its change, or why it was refused."""
    if e["result"] != "ok":
        return e["result"]
    return change_text(e["before"], e["after"])


def _backends_text(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[str]:
    """What differs between two VIP tables' backends, backend by backend."""
    a = {b["address"]: b for b in old}
    b = {x["address"]: x for x in new}
    out = []
    for addr in dict.fromkeys([*a, *b]):
        if addr not in b:
            out.append(f"backend {addr} removed")
        elif addr not in a:
            out.append(f"backend {addr} added ({_table_text(b[addr])})")
        else:
            out += [f"backend {addr} {k} {a[addr].get(k)} → {v}" for k, v in b[addr].items()
                    if a[addr].get(k) != v]
    return out


def _table_text(t: dict[str, Any]) -> str:
    """A BackendConfig ("weight 2, active") or a VipConfig ("10.0.0.1:80/tcp, 3 backends")."""
    if "backend" in t:
        host = f"[{t['address']}]" if ":" in t["address"] else t["address"]
        return f"{host}:{t['port']}/{t['protocol']}, {len(t['backend'])} backend(s)"
    return f"weight {t['weight']}, {t['state']}"


# -- methods -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    name: str
    type: type                  # str, int, bool or list
    required: bool = False
    default: Any = None
    doc: str = ""
    check: Callable[[Any], Any] | None = None  # the value as used, or InvalidParams
    range: tuple[int, int] | None = None  # an integer's inclusive bounds


@dataclass(frozen=True)
class Method:
    name: str
    doc: str
    result: Any                 # the answer's shape
    params: tuple[Param, ...] = ()
    operator: bool = False      # changes the load balancer: operators only, audited

    def check(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters with defaults filled in; InvalidParams says what is wrong.
        A null value counts as absent."""
        known = {p.name: p for p in self.params}
        unknown = sorted(k for k in params if k not in known)
        if unknown:
            raise InvalidParams(f"{self.name}: unknown parameter(s) {', '.join(unknown)}; "
                                f"it takes {', '.join(known) or 'none'}")
        out: dict[str, Any] = {}
        for p in self.params:
            value = params.get(p.name)
            if value is None:
                if p.required:
                    raise InvalidParams(f"{self.name}: missing parameter {p.name!r}")
                out[p.name] = p.default
                continue
            if not isinstance(value, p.type) or (p.type is not bool and isinstance(value, bool)):
                raise InvalidParams(f"{self.name}: parameter {p.name!r} must be "
                                    f"{_TYPE_NAMES[p.type]}, got {type(value).__name__}")
            if p.range is not None and isinstance(value, int) and not (
                    p.range[0] <= value <= p.range[1]):
                raise InvalidParams(f"{self.name}: parameter {p.name!r} must be "
                                    f"{p.range[0]}..{p.range[1]}")
            if p.check is not None:
                try:
                    value = p.check(value)
                except InvalidParams as e:
                    raise InvalidParams(f"{self.name}: parameter {p.name!r}: {e}") from None
            out[p.name] = value
        return out


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", list: "an array"}

# addresses arrive in any spelling and are compared canonical (xlb/addresses.py)
_ADDRESS = Param("address", str, True, doc="backend address (IPv4 or IPv6)",
                 check=canonical_address)
_VIP_OPT = Param("vip", str, doc="VIP name (default: every VIP that has the backend)")
_FORCE = Param("force", bool, default=False,
               doc="even if a VIP is left without a healthy backend")



def _probe_name(name: str) -> str:
    if name not in PROBES:
        raise InvalidParams(f"no probe {name!r}; the probes are {', '.join(PROBES)}")
    return name


_PROBE = Param("name", str, True, doc=f"the probe: {' | '.join(PROBES)}", check=_probe_name)
_EVENTS = (0, MAX_TRACE_EVENTS)


def _transport(name: str) -> str:
    if name not in ("tcp", "udp"):
        raise InvalidParams(f"{name[:20]!r} is not tcp or udp")
    return name


_EXPLAIN = (
    Param("src", str, True, doc="client address", check=canonical_address),
    Param("sport", int, doc="client port (absent: each backend's share of the client ports)",
          range=(0, 65535)),
    Param("dst", str, True, doc="destination (VIP) address", check=canonical_address),
    Param("dport", int, True, doc="destination port", range=(0, 65535)),
    Param("protocol", str, default="tcp", doc="tcp | udp", check=_transport),
    Param("syn", bool, default=False, doc="the packet is a TCP SYN (always asks Maglev)"),
    Param("length", int, doc="IP packet length for the mtu check (default: headers only)",
          range=(20, 65535)),
)

def _mode(value: str) -> str:
    if value not in MODES:
        raise InvalidParams(f"{value!r} is not a mode: dsr or snat")
    return value


def _xdp_mode(value: str) -> str:
    if value not in ("native", "generic"):
        raise InvalidParams(f"{value!r} is not an XDP mode: native or generic")
    return value


_BGP_PARAMS = (
    Param("vip", str, doc="a VIP name or address (its prefix: every VIP at that address)"),
    Param("all", bool, default=False, doc="every prefix of this LB (maintenance)"),
)

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("status", "the last snapshot and who is asking", Status),
    Method("vips", "every VIP with its rate and health", list[VipSummary]),
    Method("backends", "VIPs with their backends", list[Vip],
           (Param("vip", str, doc="only this VIP (by name)"),)),
    Method("audit", "the last changes: who, when, before and after", list[AuditEntry],
           (Param("n", int, default=50, doc=f"how many, newest last; 0..{MAX_AUDIT}",
                  range=(0, MAX_AUDIT)),)),
    Method("subscribe", "answer once, then stream snapshot and event notifications",
           Subscribed),
    Method("drain", "no new flows to a backend; established ones stay", ChangeResult,
           (_ADDRESS, _VIP_OPT, _FORCE), operator=True),
    Method("undrain", "let a drained backend take new flows again", ChangeResult,
           (_ADDRESS, _VIP_OPT, _FORCE), operator=True),
    Method("weight", "set a backend's weight (0 takes no new flows)", ChangeResult,
           (_ADDRESS, Param("weight", int, True, doc=f"0..{MAX_WEIGHT}"), _VIP_OPT, _FORCE),
           operator=True),
    Method("add_backend", "add a backend to a VIP: new flows at once", ChangeResult,
           (Param("vip", str, True, doc="VIP name"), _ADDRESS,
            Param("weight", int, default=1, doc=f"0..{MAX_WEIGHT}"),
            Param("state", str, default="active", doc="active | drained")), operator=True),
    Method("remove_backend", "take a backend out of a VIP", ChangeResult,
           (Param("vip", str, True, doc="VIP name"), _ADDRESS, _FORCE), operator=True),
    Method("add_vip", "add a VIP, balanced at once", ChangeResult,
           (Param("name", str, True, doc="unique VIP name"),
            Param("address", str, True, doc="VIP address", check=canonical_address),
            Param("port", int, True, doc="0..65535 (0 = any port)"),
            Param("protocol", str, True, doc="tcp | udp"),
            Param("backends", list, default=[], doc="[{address, weight?, state?}]")),
           operator=True),
    Method("remove_vip", "stop balancing a VIP: its packets pass to the host", ChangeResult,
           (Param("name", str, True, doc="VIP name"),), operator=True),
    Method("mode", "switch a VIP's forwarding mode: new flows take it, established flows "
           "keep the mode they started in", ChangeResult,
           (Param("vip", str, True, doc="VIP name"),
            Param("mode", str, True, doc="dsr | snat", check=_mode)), operator=True),
    Method("xdp_mode", "re-attach the XDP program in the other mode (native | generic); "
           "every map stays, so connections and counters survive", XdpModeChange,
           (Param("mode", str, True, doc="native | generic", check=_xdp_mode),),
           operator=True),
    Method("probes", "every probe: kind, target, state (or why not), cost", list[Probe]),
    Method("probe_attach", "attach a probe (or say why this kernel cannot)", ProbeChange,
           (_PROBE,), operator=True),
    Method("probe_detach", "detach a probe", ProbeChange, (_PROBE,), operator=True),
    Method("trace_start", "trace what the data plane does to the packets a filter matches "
           "(replaces a running trace's filter)", TraceStatus,
           (Param("filter", str, default="", doc='e.g. "src 198.18.0.0/24 and dport 80" '
                  '("" = every packet)'),
            Param("seconds", int, doc="it stops by itself after this long (default: [trace] "
                  f"seconds); 1..{MAX_TRACE_SECONDS}", range=(1, MAX_TRACE_SECONDS))),
           operator=True),
    Method("trace_stop", "stop the running trace", TraceStatus, operator=True),
    Method("trace_status", "the trace: running or not, its filter, its figures", TraceStatus),
    Method("trace_subscribe", "answer the trace's status, then stream trace notifications "
           "(read-only callers may watch)", TraceStatus,
           (Param("history", int, default=100, doc="recent events sent first, "
                  f"0..{MAX_TRACE_EVENTS}", range=_EVENTS),)),
    Method("trace_events", "the trace's recent events, oldest first", list[TraceEvent],
           (Param("n", int, default=100, doc=f"how many, 0..{MAX_TRACE_EVENTS}",
                  range=_EVENTS),)),
    Method("explain", "what the data plane would do with one flow, read from its maps "
           "(no packet sent)", Explain, _EXPLAIN),
    Method("bgp", "the BGP speaker: neighbors and their sessions, each VIP prefix announced "
           "or withdrawn and why, the event log", Bgp),
    Method("bgp_withdraw", "withdraw one VIP's prefix from the routers, or every prefix "
           "(all: maintenance); established flows move to the other LBs", BgpChange,
           _BGP_PARAMS, operator=True),
    Method("bgp_announce", "announce one VIP's prefix again (if it serves), or end "
           "maintenance (all)", BgpChange, _BGP_PARAMS, operator=True),
)}


# -- checking a document against a shape (tests, and the test double) ------------------------
def conforms(doc: Any, shape: Any, where: str = "$") -> list[str]:
    """What in `doc` does not fit `shape` (a TypedDict, list[...], dict[str, ...], a union,
    Literal, or a plain type); empty when it fits. Extra keys of a TypedDict are problems:
    a field that is not written down here does not exist."""
    origin = typing.get_origin(shape)
    if shape is Any:
        return []
    if shape is None or shape is type(None):
        return [] if doc is None else [f"{where}: expected null, got {doc!r}"]
    if origin is Literal:
        return [] if doc in typing.get_args(shape) else [
            f"{where}: {doc!r} is not one of {typing.get_args(shape)}"]
    if origin in (Union, types.UnionType):
        tries = [conforms(doc, arm, where) for arm in typing.get_args(shape)]
        return [] if any(not t for t in tries) else min(tries, key=len)
    if origin is list:
        if not isinstance(doc, list):
            return [f"{where}: expected a list, got {type(doc).__name__}"]
        (item,) = typing.get_args(shape)
        return [p for i, x in enumerate(doc) for p in conforms(x, item, f"{where}[{i}]")]
    if origin is dict:
        if not isinstance(doc, dict):
            return [f"{where}: expected an object, got {type(doc).__name__}"]
        _, value = typing.get_args(shape)
        return [p for k, v in doc.items() for p in conforms(v, value, f"{where}.{k}")]
    if typing.is_typeddict(shape):
        if not isinstance(doc, dict):
            return [f"{where}: expected an object, got {type(doc).__name__}"]
        hints = typing.get_type_hints(shape)
        required = shape.__required_keys__
        problems = [f"{where}: missing {k!r}" for k in sorted(required) if k not in doc]
        problems += [f"{where}: unknown field {k!r}" for k in sorted(doc) if k not in hints]
        for k, v in doc.items():
            if k in hints:
                problems += conforms(v, hints[k], f"{where}.{k}")
        return problems
    if shape is float:
        ok = isinstance(doc, int | float) and not isinstance(doc, bool)
    elif shape is int:
        ok = isinstance(doc, int) and not isinstance(doc, bool)
    else:
        ok = isinstance(doc, shape)
    return [] if ok else [f"{where}: expected {getattr(shape, '__name__', shape)}, "
                          f"got {type(doc).__name__} {doc!r}"[:200]]

