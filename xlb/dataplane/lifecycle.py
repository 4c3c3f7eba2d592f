"""Load, adopt, describe and unload a data-plane instance as one operation each.

The CLI (and later the agent) call these; each leaves either the new state
or the old one. Where an instance is attached is remembered in
/run/xlb/<instance>/dataplane.json next to the applied config.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np

from xlb import privileges, statefile
from xlb.dataplane import bpfsys, loader, owner, xdp
from xlb.dataplane import structs as S
from xlb.dataplane.config import Config, vip_label
from xlb.dataplane.manager import Counters, Dataplane, geometry_of, key_label
from xlb.dataplane.maps import pin_dir
from xlb.errors import BpfError, NotLoadedError, PrivilegeError, RefusedError, XlbError
from xlb.paths import PIN_ROOT, RUN_ROOT, pinned_instances, run_dir

log = logging.getLogger(__name__)


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise PrivilegeError(f"{what} needs root (CAP_BPF, CAP_NET_ADMIN): run it with sudo")


def _state_path(instance: str, run_root: str) -> str:
    return os.path.join(run_dir(instance, run_root), "dataplane.json")


def read_state(instance: str, run_root: str = RUN_ROOT) -> dict[str, Any]:
    try:
        with open(_state_path(instance, run_root)) as f:
            return json.load(f)  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _write_state(instance: str, doc: dict[str, Any], run_root: str) -> None:
    statefile.write_json(_state_path(instance, run_root), doc, indent=1)


Takeover = Callable[[dict[str, Any]], AbstractContextManager[Any]]
"""Records, durably and before it happens, that --force replaces a program xlb does not
own (the audit log's `change`): called with {instance, interface, netns, replaced, by}."""


def own_program(instance: str, pin_root: str = PIN_ROOT) -> int:
    """An fd on the instance's own program, or -1: the one pinned at <pins>/prog by its
    last load. That pin, not a name or an id written down somewhere, is how xlb knows a
    program on the hook is its own: the kernel compares the very program object."""
    try:
        return bpfsys.obj_get(os.path.join(pin_dir(instance, pin_root), loader.PROG_PIN))
    except BpfError:
        return -1


def _foreign(state: xdp.XdpState, own_fd: int) -> xdp.Program | None:
    """The program on the hook that is not the instance's own, if any."""
    own = bpfsys.prog_info(own_fd).id if own_fd >= 0 else 0
    others = [xdp.program(pid, m) for m, pid in state.programs if pid != own]
    if len(others) > 1:
        raise xdp.AttachError(f"{state.where} has {len(others)} XDP programs attached ("
                              + "; ".join(p.describe() for p in others)
                              + "): remove them first")
    return others[0] if others else None


def load_instance(cfg: Config, mode: str | None = None, pin_root: str = PIN_ROOT,
                  run_root: str = RUN_ROOT, force: bool = False,
                  takeover: Takeover | None = None) -> dict[str, Any]:
    """Compile (or adopt pinned maps), apply the config, attach. Returns a summary.

    Adoption keeps the connection table and counters: the program is
    replaced atomically on the interface, the maps stay. A program on the
    interface that is not the instance's own is refused (ForeignProgramError,
    before anything is compiled or written) unless `force`: then it is replaced,
    `takeover` recording it first, and the summary's "replaced" names it.
    """
    inst = cfg.instance
    privileges.require("loading the data plane", inst.netns)
    owner.refuse_if_owned(inst.name, "load the data plane", run_root)
    mode = mode or inst.xdp_mode
    # fail early, before compiling, on a wrong interface or a program that is not ours
    hook = xdp.query(inst.interface, inst.netns)
    own_fd = own_program(inst.name, pin_root)
    expected_fd = own_fd
    try:
        foreign = _foreign(hook, own_fd)
        if foreign is not None:
            if not force:
                raise xdp.foreign_error(hook, foreign)
            try:
                expected_fd = bpfsys.prog_fd_by_id(foreign.id)
            except BpfError as e:
                if e.errno != errno.ENOENT:  # ENOENT: gone meanwhile; attach sees the hook
                    raise PrivilegeError(f"taking over XDP program {foreign.describe()} "
                                         f"needs opening it by id ({e.strerror}): that "
                                         "needs CAP_SYS_ADMIN") from e
        loaded = loader.load(inst.name, geometry_of(cfg), pin_root,
                             trace_buffer=inst.trace_buffer_kib * 1024)
        with Dataplane(inst.name, pin_root, run_root) as dp:
            result = dp.apply(cfg)
        try:
            record = nullcontext() if foreign is None or takeover is None else takeover(
                {"instance": inst.name, "interface": inst.interface, "netns": inst.netns,
                 "replaced": foreign.as_dict(),
                 "by": xdp.program_of_fd(loaded.prog_fd, mode).as_dict()})
            with record:
                state = xdp.attach(inst.interface, loaded.prog_fd, mode, inst.netns,
                                   expected_fd=expected_fd)
        except XlbError:
            if not loaded.adopted:  # nothing was running before: leave nothing behind
                try:
                    xdp.detach(inst.interface, inst.netns, expected_fd=loaded.prog_fd)
                except XlbError:
                    pass  # the interface is gone: nothing is attached there
                loader.remove_pins(inst.name, pin_root)
                shutil.rmtree(run_dir(inst.name, run_root), ignore_errors=True)
            elif own_fd >= 0:  # the earlier program is still the one attached: still ours
                loader.pin_program(inst.name, own_fd, pin_root)
            raise
    finally:
        for fd in {own_fd, expected_fd} - {-1}:
            os.close(fd)
    if foreign is not None:
        log.warning("%s: took over %s from another XDP program (%s) (--force)", inst.name,
                    hook.where, foreign.describe())
    doc = {"instance": inst.name, "interface": inst.interface, "netns": inst.netns,
           "mode": state.mode, "prog_id": state.prog_id, "loaded_at": time.time(),
           "adopted": loaded.adopted}
    _write_state(inst.name, doc, run_root)
    return {**doc, "replaced": foreign.as_dict() if foreign else None,
            "vips_added": result.vips_added, "vips_changed": result.vips_changed,
            "vips_removed": result.vips_removed, "backends_added": result.backends_added,
            "backends_removed": result.backends_removed}


def apply_config(cfg: Config, pin_root: str = PIN_ROOT, run_root: str = RUN_ROOT) -> dict:
    """Apply a config to a loaded instance without recompiling."""
    privileges.require("changing the data plane")
    owner.refuse_if_owned(cfg.instance.name, "apply a config", run_root)
    with Dataplane(cfg.instance.name, pin_root, run_root) as dp:
        r = dp.apply(cfg)
    return {"instance": cfg.instance.name, "vips_added": r.vips_added,
            "vips_changed": r.vips_changed, "vips_removed": r.vips_removed,
            "backends_added": r.backends_added, "backends_removed": r.backends_removed,
            "seconds": round(r.seconds, 4)}


def switch_xdp_mode(instance: str, mode: str, pin_root: str = PIN_ROOT,
                    run_root: str = RUN_ROOT) -> dict[str, Any]:
    """Re-attach the instance's own (pinned) program in the other XDP mode: {interface,
    before, after, gap_seconds}. A device cannot hold native and generic at once, so the
    program is detached and attached again; every map stays, and so do connections and
    counters. The gap is measured: packets in it meet no XDP program (the kernel's own
    path). The same mode again touches nothing (gap 0). Native is refused BEFORE anything
    is detached where the kernel says the driver has none; an attach that fails anyway
    puts the program back in its old mode (the error says so)."""
    if mode not in xdp.MODE_FLAGS:
        raise RefusedError(f"unknown XDP mode {mode!r}: use native or generic")
    state = read_state(instance, run_root)
    privileges.require("switching the XDP mode", state.get("netns", ""))
    own_fd = own_program(instance, pin_root)
    if not state.get("interface") or own_fd < 0:
        if own_fd >= 0:
            os.close(own_fd)
        raise NotLoadedError(f"no data plane instance {instance!r} is loaded")
    interface, netns = state["interface"], state.get("netns", "")
    try:
        hook = xdp.query(interface, netns)
        own = bpfsys.prog_info(own_fd).id
        before = next((m for m, pid in hook.programs if pid == own), None)
        foreign = _foreign(hook, own_fd)
        if foreign is not None:
            raise xdp.foreign_error(hook, foreign)
        if before is None:
            raise NotLoadedError(f"{hook.where}: {instance}'s program is not attached; "
                                 "load it again (or let the agent re-attach it)")
        if before == mode:
            return {"interface": interface, "before": before, "after": mode,
                    "gap_seconds": 0.0}
        if mode == "native" and xdp.native_supported(interface, netns) is False:
            raise RefusedError(f"native XDP refused on {hook.where}: its driver has no native "
                               f"XDP (the kernel lists no XDP features for it); the program "
                               f"stays attached in {before} mode")
        after, gap = xdp.attach_timed(interface, own_fd, mode, netns, expected_fd=own_fd)
    finally:
        os.close(own_fd)
    _write_state(instance, {**state, "mode": after.mode, "prog_id": after.prog_id}, run_root)
    log.info("%s: XDP on %s switched from %s to %s mode (%.1f ms without a program)",
             instance, hook.where, before, after.mode, gap * 1000)
    return {"interface": interface, "before": before, "after": after.mode,
            "gap_seconds": round(gap, 6)}


def unload_instance(instance: str, remove_pins: bool = False, pin_root: str = PIN_ROOT,
                    run_root: str = RUN_ROOT) -> dict[str, Any]:
    """Detach the program; with remove_pins also drop maps (connections are lost)."""
    require_root("unloading the data plane")
    owner.refuse_if_owned(instance, "unload the data plane", run_root)
    state = read_state(instance, run_root)
    if not state and not os.path.isdir(pin_dir(instance, pin_root)):
        raise NotLoadedError(f"no data plane instance {instance!r} is loaded")
    detached = False
    own_fd = own_program(instance, pin_root)
    if state.get("interface") and own_fd >= 0:
        try:  # only the instance's own program: another one attached since stays
            where = (state["interface"], state.get("netns", ""))
            before = xdp.query(*where).programs
            detached = before != xdp.detach(*where, expected_fd=own_fd).programs
        except xdp.AttachError:
            pass  # the interface (or its namespace) is gone: nothing to detach
    if own_fd >= 0:
        os.close(own_fd)
    prog = os.path.join(pin_dir(instance, pin_root), loader.PROG_PIN)
    if os.path.exists(prog):
        os.unlink(prog)
    if remove_pins:
        loader.remove_pins(instance, pin_root)
        shutil.rmtree(run_dir(instance, run_root), ignore_errors=True)
    else:
        path = _state_path(instance, run_root)
        if os.path.exists(path):
            os.unlink(path)
    return {"instance": instance, "detached": detached, "pins_removed": remove_pins}


def instances(pin_root: str = PIN_ROOT) -> list[str]:
    return pinned_instances(pin_root)


def describe(instance: str, pin_root: str = PIN_ROOT, run_root: str = RUN_ROOT,
             sample: float = 0.0) -> dict[str, Any]:
    """Everything `show`/`status` print, from the pinned maps and netlink."""
    state = read_state(instance, run_root)
    with Dataplane(instance, pin_root, run_root) as dp:
        first = dp.counters()
        if sample > 0:
            time.sleep(sample)
        c = dp.counters()
        backends = dp.backend_entries()
        applied = dp.applied_config() or {}
        vips = []
        names = {}
        weights: dict[tuple[str, str], dict[str, Any]] = {}
        for v in (applied.get("config") or {}).get("vip", []):
            label = vip_label(ipaddress.ip_address(v["address"]), v["port"], v["protocol"])
            names[label] = v.get("name", label)
            for b in v.get("backend", []):
                weights[(label, b["address"])] = b
        for key, meta in dp.vip_entries().values():
            label = key_label(key)
            ring = dp.ring(meta.ring_slot)
            ids, counts = np.unique(ring, return_counts=True)
            share = dict(zip(ids.tolist(), (counts / len(ring)).tolist(), strict=True))
            rows = []
            for bid, b in sorted(backends.items()):
                addr = str(S.unpack_addr(b.addr, b.family))
                conf = weights.get((label, addr))
                if conf is None and bid not in share:
                    continue
                rows.append({"address": addr, "id": bid,
                             "weight": conf.get("weight") if conf else None,
                             "state": conf.get("state", "active") if conf else "unknown",
                             "ring_share": round(share.get(bid, 0.0), 6),
                             "packets": int(c.backends[bid, 0]), "bytes": int(c.backends[bid, 1]),
                             "new_connections": int(c.backends[bid, 2]),
                             "active_connections": int(c.active[bid])})
            mode = "snat" if meta.flags & S.XLB_VIP_F_SNAT else "dsr"  # of its new flows
            vips.append({"name": names.get(label, label), "vip": label, "mode": mode,
                         "id": meta.vip_id,
                         "ring_slot": meta.ring_slot, "packets": int(c.vips[meta.vip_id, 0]),
                         "bytes": int(c.vips[meta.vip_id, 1]), "backends": rows})
    attach: dict[str, Any] = {"interface": state.get("interface"), "netns": state.get("netns"),
                              "mode": None, "prog_id": None, "ours": False}
    if state.get("interface"):
        try:
            q = xdp.query(state["interface"], state.get("netns", ""))
            attach.update(mode=q.mode, prog_id=q.prog_id,
                          ours=bool(q.prog_id and q.prog_id == state.get("prog_id")))
        except xdp.AttachError as e:
            attach["error"] = str(e)
    return {"instance": instance, "pin_dir": pin_dir(instance, pin_root),
            "geometry": vars(dp.geometry) | {"ring_slots": dp.geometry.ring_slots},
            "attach": attach, "loaded_at": state.get("loaded_at"),
            "vips": sorted(vips, key=lambda v: v["id"]),
            **counter_summary(first, c, sample)}


def counter_summary(before: Counters, after: Counters, seconds: float) -> dict[str, Any]:
    """Totals, and rates when the two readings are `seconds` apart."""
    q = after.queues
    queues = []
    for i in np.nonzero(q[:, 0])[0].tolist():
        row = {"queue": i, "packets": int(q[i, 0]), "bytes": int(q[i, 1]),
               "actions": {a: int(q[i, 2 + j]) for j, a in enumerate(S.XDP_ACTIONS)}}
        if seconds > 0:
            row["pps"] = round(float(q[i, 0] - before.queues[i, 0]) / seconds, 1)
        queues.append(row)
    reasons = {r.label: {"packets": int(after.reasons[r, 0]), "bytes": int(after.reasons[r, 1])}
               for r in S.Reason}
    total: dict[str, float] = {"packets": int(q[:, 0].sum()), "bytes": int(q[:, 1].sum()),
             "dropped": int(q[:, 2 + 1].sum() + q[:, 2].sum())}
    if seconds > 0:
        total["pps"] = round(float(q[:, 0].sum() - before.queues[:, 0].sum()) / seconds, 1)
    misses: dict[str, dict[str, float]] = {}
    for m in S.Miss:  # connection-table misses by kind (a non-SYN one: a flow's state lost)
        misses[m.label] = {"packets": int(after.misses[m, 0])}
        if seconds > 0:
            grew = max(0, int(after.misses[m, 0]) - int(before.misses[m, 0]))
            misses[m.label]["per_s"] = round(grew / seconds, 1)
    return {"totals": total, "queues": queues, "reasons": reasons, "misses": misses}
