"""The instance lock: one holder at a time, named in every refusal; looking takes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xlb.dataplane.owner import Ownership, holder, refuse_if_owned
from xlb.errors import OwnedError


def test_one_holder_at_a_time_and_looking_takes_nothing(tmp_path: Path) -> None:
    root = str(tmp_path)
    assert holder("lb1", root) is None
    first = Ownership("lb1", root)
    first.acquire("agent")
    h = holder("lb1", root)
    assert h is not None and h["pid"] == os.getpid() and h["who"] == "agent"
    refuse_if_owned("lb1", "apply a config", root)  # its own holder may write
    with pytest.raises(OwnedError, match=rf"cannot start another agent: instance lb1 is run "
                                         rf"by its agent \(pid {os.getpid()}, since "):
        Ownership("lb1", root).acquire("agent")
    assert holder("lb2", root) is None  # instances are apart
    first.release()
    assert holder("lb1", root) is None  # the file stays; it means nothing on its own
    for _ in range(3):  # looking never makes the next start fail
        holder("lb1", root)
    second = Ownership("lb1", root)
    second.acquire("agent")
    second.release()


def test_another_process_is_refused(tmp_path: Path) -> None:
    root = str(tmp_path)
    r, w = os.pipe()    # child -> parent: "I hold it"
    r2, w2 = os.pipe()  # parent -> child: "let go"
    pid = os.fork()
    if pid == 0:  # the child holds the lock until told to go
        o = Ownership("lb1", root)
        o.acquire("agent")
        os.write(w, b"x")
        os.read(r2, 1)
        os._exit(0)
    os.read(r, 1)
    try:
        with pytest.raises(OwnedError, match=rf"\(pid {pid}, since "):
            refuse_if_owned("lb1", "apply a config", root)
    finally:
        os.write(w2, b"x")
        os.waitpid(pid, 0)
    assert holder("lb1", root) is None  # gone with the process



def test_a_forked_child_does_not_hold_the_lock(tmp_path: Path) -> None:
    """pyroute2 forks helpers inside the agent: one that outlives the agent by a moment
    must not keep the instance locked for the agent's successor."""
    root = str(tmp_path)
    o = Ownership("lb1", root)
    o.acquire("agent")
    r, w = os.pipe()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper: up (its at-fork hooks have run), then lingers until told to go
        os.write(ready_w, b"x")
        os.read(r, 1)
        os._exit(0)
    try:
        os.read(ready_r, 1)
        o.release()  # the agent is gone; its helper is not
        assert holder("lb1", root) is None
    finally:
        os.write(w, b"x")
        os.waitpid(pid, 0)
