"""BackendScreen: one backend in full, and who changed it when (the agent's audit log)."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.reactive import var
from textual.widgets import Label, Static

from console.dialogs.base import Dialog
from console.draw import ago, pct
from console.model import BackendRow, VipRef
from xlb.api.protocol import AuditEntry, Snapshot, entry_text

AUDIT_LINES = 50


def backend_facts(ref: VipRef, row: BackendRow, snap: Snapshot | None) -> list[tuple[str, str]]:
    """(name, value) lines about a backend of `ref`, from its instance's last snapshot."""
    now = snap["time"] if snap else 0.0
    in_vips = (", ".join(v["name"] for v in snap["vips"]
                         if any(b["address"] == row.address for b in v["backends"]))
               if snap else "?")
    return [("VIP", f"{ref.name} {ref.label} on {ref.instance}"),
            ("weight", str(row.weight)), ("state", row.state), ("health", row.health),
            ("Maglev table share", pct(row.ring_share).strip()),
            ("share of new connections", pct(row.conn_share).strip()),
            ("share of packets", pct(row.packet_share).strip()),
            ("active connections", f"{row.active_connections} (flows seen in the last ~8.6 s)"),
            ("new connections/s", f"{row.new_connections_per_s:.1f}"),
            ("packets/s", f"{row.pps:.1f}"),
            ("last change", f"{ago(now - row.changed)} ago" if row.changed else "-"),
            ("in VIPs", in_vips)]


def audit_lines(entries: list[AuditEntry], address: str) -> list[str]:
    """The changes to `address`, newest first, one line each."""
    lines = []
    for entry in reversed(entries):
        if entry["params"].get("address") != address:
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry["time"]))
        lines.append(f"{when}  {entry['user']} (uid {entry['uid']})  {entry['action']}  "
                     + entry_text(entry))
    return lines[:AUDIT_LINES]


class BackendScreen(Dialog[None]):
    """The facts at once; the audit trail when the app's worker has fetched it (show_audit)."""

    DEFAULT_CSS = """
    BackendScreen #audit-title { text-style: bold; margin-top: 1; }
    """
    FRAME = "tall"
    BINDINGS = [Binding("enter,q", "cancel", "Close")]

    # may be set before the dialog is composed: an answer that needs no agent is at once
    audit: var[str] = var("loading …", init=False)

    def __init__(self, ref: VipRef, row: BackendRow, snap: Snapshot | None):
        super().__init__(f"Backend {row.address}")
        self.facts = backend_facts(ref, row, snap)

    def compose_body(self) -> ComposeResult:
        width = max(len(k) for k, _ in self.facts)
        with VerticalScroll():  # one scroll for both: on 24 rows the hint still shows
            yield Static("\n".join(f"{k:<{width}}  {v}" for k, v in self.facts),
                         id="dialog-body", markup=False)
            yield Label("Recent changes (audit log)", id="audit-title")
            yield Static(self.audit, id="audit-body", markup=False)
        yield Static("Esc closes", id="dialog-hint")

    def on_mount(self) -> None:
        self.watch_audit(self.audit)

    def watch_audit(self, text: str) -> None:
        for body in self.query("#audit-body").results(Static):
            body.update(text)

    def show_audit(self, lines: list[str]) -> None:
        self.audit = "\n".join(lines) or "no changes recorded"
