"""Ctrl-C and SIGTERM for the lab's long operations: stop at once, then clean up.

Inside `stopping()`, SIGINT (Ctrl-C) and SIGTERM raise `Interrupted` in the main thread
at once, whatever it waits on (a netlink call, a sleep, an agent that does not answer),
so the operation stops promptly and its `except`/`finally` undo what it made. A few
steps must not be cut in half: starting a process and recording its PID (or a killed
build leaves a process nobody knows of), and the cleanup itself. They run inside
`held()`: a signal that arrives there is kept and raised when the block ends (or
dropped with `held(drop=True)`: a cleanup is already the answer to it).

Python runs a signal's handler at the next bytecode, and that can be inside code whose
exceptions it ignores (an at-fork hook of `logging` while pyroute2 or subprocess forks:
"Exception ignored in ..."). So a signal stays noted until it is acted on, and `check()`
between steps raises it again; the "ignored" report of such an Interrupted is not
printed (it is not lost, and a traceback is not an answer to Ctrl-C).

pyroute2's calls are such steps too (`xlb.lab.netns.session()`): pyroute2 runs each one
in an asyncio loop of its own, or in a forked helper, and an exception raised in the middle
leaves a task pending in that loop (garbage-collected after the loop, it prints
"Exception ignored in: <coroutine ...setup_endpoint> ... RuntimeError: Event loop is
closed") or a helper still making a namespace after the cleanup looked for it. They take
milliseconds.

A forked child (pyroute2 forks to enter a namespace) inherits the handler: there a
signal ends the child as it would by default, and never runs the parent's cleanup;
but a child forked inside `held()` (pyroute2's helper, as Ctrl-C reaches the whole
terminal's process group) ignores it, finishes its part of the step and exits, and the
parent acts on the signal after the step.

Outside the main thread (a test's worker thread) these are no-ops: Python delivers
signals to the main thread only.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from xlb.errors import Interrupted

SIGNALS = (signal.SIGINT, signal.SIGTERM)

_owner = 0                # the process whose stopping() installed the handler
_held = 0                 # depth of held() blocks
_noted: list[int] = []    # signals not acted on yet (raised, maybe swallowed, or held)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if os.getpid() != _owner:  # a forked child (pyroute2's netns helper, a subprocess
        if _held:              # before exec). Forked in a held step: the parent waits for it
            return             # and acts on the signal after the step
        signal.signal(signum, signal.SIG_DFL)  # otherwise die as by default, never
        os.kill(os.getpid(), signum)           # run the parent's cleanup in a copy of it
        return
    _noted.append(signum)
    if not _held:
        raise Interrupted(signum)


def check() -> None:
    """Raise Interrupted for a signal that arrived and was not acted on (between steps)."""
    if _noted and not _held:
        raise Interrupted(_noted[0])


@contextmanager
def stopping() -> Iterator[None]:
    """SIGINT and SIGTERM raise Interrupted inside this block (the previous handlers come
    back after it, and its signals count as acted on)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    global _owner
    _owner = os.getpid()
    before = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    unraisable = sys.unraisablehook

    def quiet(u: sys.UnraisableHookArgs) -> None:
        if not isinstance(u.exc_value, Interrupted):  # noted: check() raises it again
            unraisable(u)

    sys.unraisablehook = quiet
    try:
        yield
    finally:
        sys.unraisablehook = unraisable
        for s, handler in before.items():
            signal.signal(s, handler)
        _noted.clear()


@contextmanager
def held(drop: bool = False) -> Iterator[None]:
    """A block no signal cuts in half: one that arrives is raised as Interrupted when the
    block ends, unless the block fails anyway, or `drop` (then it counts as acted on)."""
    global _held
    _held += 1
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        _held -= 1
        if not _held and _noted:
            if drop:
                _noted.clear()
            elif not failed:
                raise Interrupted(_noted[0])
