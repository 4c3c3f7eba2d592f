"""Typed messages: what a link hears reaches the app as one dataclass per kind, and each
kind does its one thing (fleet, header, bindings, notifications)."""

from __future__ import annotations

import dataclasses
import time
import typing
from pathlib import Path
from typing import Any

from textual.message import Message
from textual.widgets import Static

from console.app import XlbConsole
from console.link import AgentLink, notification
from console.messages import AgentHello, EventArrived, LinkLost, SnapshotArrived
from tests.agent_double import AgentDouble
from tests.console.bare import PATH, run_bare, snapshot, status
from tests.helpers import until
from xlb.api.protocol import (
    ChangeEvent,
    ErrorEvent,
    Event,
    HealthEvent,
    PanicEvent,
    Snapshot,
    Status,
)


def header(app: XlbConsole) -> str:
    return str(app.query_one("#status", Static).render())


def test_each_message_is_a_dataclass_with_typed_fields() -> None:
    for cls, fields in ((AgentHello, {"path": str, "status": Status}),
                        (SnapshotArrived, {"path": str, "snapshot": Snapshot}),
                        (EventArrived, {"path": str, "event": Event}),
                        (LinkLost, {"path": str, "error": str})):
        assert issubclass(cls, Message) and dataclasses.is_dataclass(cls)
        hints = typing.get_type_hints(cls)
        assert {f.name: hints[f.name] for f in dataclasses.fields(cls)} == fields, cls


def test_a_snapshot_message_updates_the_fleet_and_redraws() -> None:
    doc = snapshot(backends=4)

    async def scenario(app: XlbConsole, pilot: Any) -> None:
        before = app.redraws
        app.post_message(SnapshotArrived(PATH, doc))
        await until(lambda: "lb1" in app.fleet.instances, pilot)
        assert app.fleet.instances["lb1"].snap is doc and app.fleet.by_path[PATH] == "lb1"
        assert app.fleet.links[PATH].connected
        await until(lambda: "lb1 on lab-host" in str(
            app.query_one("#ov-summary", Static).render()), pilot)
        assert app.redraws > before

    run_bare(scenario)


def test_a_vip_in_panic_is_marked_on_the_overview() -> None:
    doc = snapshot(backends=3)
    doc["vips"][0]["panic"] = True

    async def scenario(app: XlbConsole, pilot: Any) -> None:
        app.post_message(SnapshotArrived(PATH, doc))
        await until(lambda: "web" in str(app.query_one("#ov-vips", Static).render()), pilot)
        lines = str(app.query_one("#ov-vips", Static).render()).splitlines()
        assert [line.split()[1] for line in lines if "PANIC" in line] == ["web"]

    run_bare(scenario)


def test_a_hello_message_says_who_we_are_to_the_agent() -> None:
    async def scenario(app: XlbConsole, pilot: Any) -> None:
        app.post_message(AgentHello(PATH, status(operator=False)))
        await until(lambda: "READ-ONLY (read-only credentials)" in header(app), pilot)
        link = app.fleet.links[PATH]
        assert link.connected and not link.operator and app.read_only()
        assert "caller" not in app.fleet.instances["lb1"].snap
        assert "lb1 ● live" in header(app)

    run_bare(scenario)


def test_a_lost_message_marks_the_link() -> None:
    async def scenario(app: XlbConsole, pilot: Any) -> None:
        app.post_message(AgentHello(PATH, status()))
        await until(lambda: "lb1 ● live" in header(app), pilot)
        app.post_message(LinkLost(PATH, "the agent closed the connection"))
        await until(lambda: "disconnected" in header(app), pilot)
        link = app.fleet.links[PATH]
        assert not link.connected and link.error == "the agent closed the connection"
        assert "reconnecting" in header(app) and "closed the connection" in header(app)
        assert "lb1" in app.fleet.instances  # the last figures stay on screen

    run_bare(scenario)


def test_event_messages_become_notifications() -> None:
    seen: list[tuple[str, str]] = []
    app = XlbConsole([])

    def notify(message: str, **kw: Any) -> None:
        seen.append((message, kw.get("severity", "")))

    app.notify = notify  # type: ignore[method-assign]
    down: HealthEvent = {"kind": "health", "time": 1.0, "address": "198.18.2.1",
                         "healthy": False, "reason": "connect refused"}
    up: HealthEvent = {**down, "healthy": True}
    error: ErrorEvent = {"kind": "error", "time": 2.0, "message": "map update failed"}
    change: ChangeEvent = {"kind": "change", "time": 3.0, "uid": 0, "user": "root",
                           "action": "drain", "params": {}, "before": {}, "after": {},
                           "result": "ok"}
    panic: PanicEvent = {"kind": "panic", "time": 4.0, "vip": "web", "panic": True,
                         "healthy": 0, "serving": 3, "message": "VIP web in panic"}
    calm: PanicEvent = {**panic, "panic": False, "message": "VIP web out of panic"}

    async def scenario(app: XlbConsole, pilot: Any) -> None:
        app.post_message(AgentHello(PATH, status()))
        events: list[Event] = [down, up, change, error, panic, calm]  # a change: the audit
        for event in events:
            app.post_message(EventArrived(PATH, event))
        await until(lambda: len(seen) == 5, pilot)
        await pilot.pause(0.1)
        assert seen == [("lb1: backend 198.18.2.1 DOWN (connect refused)", "warning"),
                        ("lb1: backend 198.18.2.1 back up", "information"),
                        ("lb1: map update failed", "error"),
                        ("lb1: VIP web in panic", "error"),
                        ("lb1: VIP web out of panic", "information")]

    run_bare(scenario, app)


def test_the_link_posts_typed_messages(tmp_path: Path) -> None:
    """Over the real protocol: a hello with the caller, snapshots, and a loss when the
    agent goes away."""
    double = AgentDouble(str(tmp_path / "lb1.sock")).start()
    posted: list[Message] = []
    link = AgentLink(double.path, posted.append)
    link.start()

    def wait(cond: typing.Callable[[], bool]) -> None:
        end = time.monotonic() + 10
        while not cond():
            assert time.monotonic() < end, posted
            time.sleep(0.02)

    try:
        wait(lambda: any(isinstance(m, SnapshotArrived) for m in posted))
        hello = posted[0]
        assert isinstance(hello, AgentHello) and hello.path == double.path
        assert hello.status["caller"] == {"user": "tester", "operator": True}
        snap = next(m for m in posted if isinstance(m, SnapshotArrived))
        assert snap.snapshot["instance"] == "lb1" and snap.path == double.path
        double.stop()
        wait(lambda: any(isinstance(m, LinkLost) for m in posted))
        lost = next(m for m in posted if isinstance(m, LinkLost))
        assert lost.path == double.path and lost.error
    finally:
        link.stop()
        double.stop()


def test_a_notification_this_console_does_not_know_is_ignored() -> None:
    doc = snapshot()
    assert isinstance(notification(PATH, "snapshot", doc), SnapshotArrived)
    assert isinstance(notification(PATH, "event", {"kind": "error", "time": 0.0,
                                                   "message": "x"}), EventArrived)
    assert notification(PATH, "bgp_update", {}) is None  # a newer agent's
