"""One ExaBGP per instance, supervised by a thread that lives as long as the Speaker.

Why a thread of our own, and why it does everything (spawn, read, write, restart): ExaBGP
must die with the agent even on SIGKILL, which is PR_SET_PDEATHSIG, and that signal fires
when the *thread* that forked the child ends: so one long-lived thread forks every ExaBGP.
The same thread reads ExaBGP's messages and writes our commands (through the bridge, on a
Unix socket in the instance's run dir), so the tick never blocks on ExaBGP and nothing
here raises into it: set_routes only records the wanted set and wakes the thread. ExaBGP
is entered into the instance's network namespace in the child, before exec (setns).

Routes: the thread sends only changes against what this ExaBGP was told; after a (re)start
it was told nothing, so every announced prefix goes again. ExaBGP keeps what it was told
and re-sends it by itself when a session comes back. If ExaBGP dies it is started again
after a back-off (1, 2, 4 ... 30 s; back to 1 s after a minute up).
"""

from __future__ import annotations

import ctypes
import ipaddress
import logging
import os
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping

from xlb import procs
from xlb.api import protocol as P
from xlb.bgp import conf
from xlb.bgp import messages as M
from xlb.bgp.neighbors import Neighbors, canonical_prefix
from xlb.bgp.settings import BgpSettings
from xlb.paths import run_dir

log = logging.getLogger(__name__)

BACKOFF = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
STABLE = 60.0          # seconds up after which the back-off starts again at 1 s
BRIDGE_WAIT = 30.0     # seconds for a started ExaBGP to run its bridge and connect
STOP_WAIT = 5.0        # seconds between SIGTERM and SIGKILL
SUN_PATH_MAX = 107     # bytes in a Unix socket's path
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
EXIT_NETNS = 126       # the child could not enter the namespace
SIGTERM = int(signal.SIGTERM)

_libc = ctypes.CDLL(None, use_errno=True)


class Speaker:
    """One ExaBGP for one instance, supervised; thread-safe; never raises into the tick."""

    def __init__(self, settings: BgpSettings, instance: str, netns: str | None,
                 on_event: Callable[[P.BgpEvent], None], run_root: str | None = None) -> None:
        self.settings = settings
        self.instance = instance
        self.netns = netns
        self.on_event = on_event
        self.dir = run_dir(instance) if run_root is None else run_dir(instance, run_root)
        self.sock_path = os.path.join(self.dir, "exabgp.sock")
        if len(os.fsencode(self.sock_path)) > SUN_PATH_MAX:  # a Unix socket's path is short
            self.sock_path = os.path.join(tempfile.gettempdir(),
                                          f"xlb-exabgp-{instance}-{os.getpid()}.sock")
        self.conf_path = os.path.join(self.dir, "exabgp.conf")
        self.log_path = os.path.join(self.dir, "exabgp.log")
        self._lock = threading.Lock()
        self._neighbors = Neighbors(settings)
        self._desired: dict[str, bool] = {}
        self._raw: dict[str, bool] = {}       # set_routes' last argument, as given
        self._told: dict[str, bool] = {}      # what the running ExaBGP was told
        self._state: P.BgpSpeakerState = "off"
        self._pid = 0
        self._restarts = 0
        self._last_error = ""
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread: threading.Thread | None = None
        self._acks: deque[str] = deque()      # commands waiting for ExaBGP's done/error

    # -- the interface the agent uses --------------------------------------------------------

    def start(self) -> None:
        """Start the supervising thread; returns at once."""
        if self._thread is not None:
            return
        with self._lock:
            self._state = "starting"
        self._thread = threading.Thread(target=self._supervise, name=f"exabgp-{self.instance}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """SIGTERM to ExaBGP (it sends a Cease to its peers), SIGKILL after 5 s; joins."""
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(STOP_WAIT + 5.0)
            if self._thread.is_alive():  # cannot happen short of a hung kernel: keep its fds
                log.error("bgp %s: the speaker thread did not end", self.instance)
                return
            self._thread = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def set_routes(self, routes: Mapping[str, bool]) -> None:
        """The whole wanted set, prefix -> announce?; cheap when nothing changed."""
        raw = dict(routes)
        if raw == self._raw:  # every tick, mostly unchanged: no parsing then
            return
        wanted = {canonical_prefix(p): bool(a) for p, a in raw.items()}
        with self._lock:
            self._raw = raw
            if wanted == self._desired:
                return
            self._desired = wanted
        self._wake()

    def neighbors(self) -> list[P.BgpNeighbor]:
        with self._lock:
            return self._neighbors.snapshot(time.time())

    def state(self) -> tuple[P.BgpSpeakerState, int, int, str]:
        """(state, ExaBGP's pid or 0, restarts, last error)."""
        with self._lock:
            return self._state, self._pid, self._restarts, self._last_error

    def carried(self) -> dict[str, list[str]]:
        """prefix -> the established peers ExaBGP sent it to (every wanted prefix is a key)."""
        with self._lock:
            out: dict[str, list[str]] = {p: [] for p in self._desired}
            out.update(self._neighbors.carried())
        return out

    # -- the supervising thread ------------------------------------------------------------

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # full (a wake-up is pending anyway) or closed

    def _emit(self, events: list[tuple[P.BgpEventKind, str, str]]) -> None:
        now = time.time()
        for kind, peer, message in events:
            log.info("bgp %s: %s%s", self.instance, f"{peer}: " if peer else "", message)
            try:
                self.on_event({"time": now, "kind": kind, "peer": peer, "message": message})
            except Exception:  # noqa: BLE001 - the owner's bug must not stop the speaker
                log.exception("bgp %s: event handler failed", self.instance)

    def _supervise(self) -> None:
        attempt = starts = 0
        listener: socket.socket | None = None
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                ran = False
                try:
                    if listener is None:
                        listener = self._listen()
                    ran = self._run_once(listener, first=starts == 0)
                except Exception as e:  # noqa: BLE001 - reported and retried, never raised
                    log.exception("bgp %s: the speaker failed", self.instance)
                    with self._lock:
                        self._last_error = f"speaker error: {e}"
                starts += 1
                if self._stop.is_set():
                    break
                if ran and time.monotonic() - started >= STABLE:
                    attempt = 0
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                with self._lock:
                    self._state = "restarting" if ran else "failed"
                    why = self._last_error
                self._emit([("speaker", "", f"{why}; starting ExaBGP again in {delay:g} s")])
                self._stop.wait(delay)
        finally:
            if listener is not None:
                listener.close()
            try:
                os.unlink(self.sock_path)
            except OSError:
                pass
            with self._lock:
                self._state, self._pid = "off", 0

    def _listen(self) -> socket.socket:
        os.makedirs(self.dir, exist_ok=True)
        try:
            os.unlink(self.sock_path)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # owner only from the start (whoever connects may announce routes): the mode of the
        # socket's inode, which bind gives the file; never the umask, which is the whole
        # process's (another thread's file, another Speaker's bind would take it)
        os.fchmod(s.fileno(), 0o600)
        s.bind(self.sock_path)
        s.listen(1)
        return s

    def _run_once(self, listener: socket.socket, first: bool) -> bool:
        """Start ExaBGP, serve it until it ends (or we stop); True if its bridge connected."""
        with open(self.conf_path, "w") as f:
            f.write(conf.config(self.settings, self.sock_path))
        try:
            proc = self._spawn()
        except OSError as e:
            with self._lock:
                self._last_error = f"cannot start ExaBGP: {e}"
            return False
        with self._lock:
            self._state, self._pid, self._told = "starting", proc.pid, {}
            if not first:
                self._restarts += 1
            self._acks.clear()
        self._emit([("speaker", "", f"ExaBGP started (pid {proc.pid})")])
        conn, trouble = None, ""
        try:
            conn, trouble = self._accept(listener, proc)
            if conn is not None:
                with self._lock:
                    self._state = "running"
                trouble = self._serve(conn, proc)
        finally:
            if conn is not None:
                conn.close()
            why = self._end(proc, trouble)
            with self._lock:
                self._pid = 0
                events = self._neighbors.speaker_gone(why, time.time())
                if not self._stop.is_set():
                    self._last_error = why
            self._emit(events)
        return conn is not None

    def _spawn(self) -> subprocess.Popen[bytes]:
        nsfd = -1
        if self.netns:
            path = self.netns if "/" in self.netns else f"/run/netns/{self.netns}"
            nsfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        parent = os.getpid()

        def child() -> None:  # after fork, before exec: only async-signal-safe work
            _libc.prctl(PR_SET_PDEATHSIG, SIGTERM, 0, 0, 0)
            if os.getppid() != parent:  # the agent died before the line above
                os._exit(0)
            if nsfd >= 0 and _libc.setns(nsfd, CLONE_NEWNET) != 0:
                os._exit(EXIT_NETNS)

        if os.path.exists(self.log_path):
            os.replace(self.log_path, self.log_path + ".1")
        out = open(self.log_path, "wb")
        try:
            return subprocess.Popen(
                conf.exabgp_command(self.settings, self.conf_path), cwd=self.dir,
                env=conf.environment(self.settings), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, preexec_fn=child, start_new_session=True)
        finally:
            out.close()
            if nsfd >= 0:
                os.close(nsfd)

    def _accept(self, listener: socket.socket, proc: subprocess.Popen[bytes]
                ) -> tuple[socket.socket | None, str]:
        """ExaBGP's bridge connection, or None and why not ("" = ExaBGP ended, or close())."""
        deadline = time.monotonic() + BRIDGE_WAIT
        while not self._stop.is_set() and proc.poll() is None:
            if time.monotonic() > deadline:
                return None, f"ExaBGP's bridge did not connect within {BRIDGE_WAIT:g} s"
            ready, _, _ = select.select([listener.fileno(), self._wake_r], [], [], 0.2)
            if listener.fileno() in ready:
                conn, _ = listener.accept()
                conn.settimeout(STOP_WAIT)
                return conn, ""
            self._drain_wake()
        return None, ""

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except OSError:
            pass

    def _serve(self, conn: socket.socket, proc: subprocess.Popen[bytes]) -> str:
        """Relay until ExaBGP ends ("") or breaks (why). On close(): SIGTERM, and read on
        until it is gone, so its last words (sessions down, Cease sent) are taken in."""
        try:
            self._relay(conn, proc)
        except OSError as e:  # the bridge broke or ExaBGP stopped reading: end and restart it
            log.warning("bgp %s: ExaBGP's bridge: %s", self.instance, e)
            return f"ExaBGP's bridge failed: {e}"
        return ""

    def _relay(self, conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        buf = b""
        deadline = 0.0
        while proc.poll() is None:
            if self._stop.is_set():
                if not deadline:
                    proc.send_signal(signal.SIGTERM)
                    deadline = time.monotonic() + STOP_WAIT
                elif time.monotonic() > deadline:
                    return
            else:
                self._send_changes(conn)
            ready, _, _ = select.select([conn.fileno(), self._wake_r], [], [], 0.5)
            if self._wake_r in ready:
                self._drain_wake()
            if conn.fileno() not in ready:
                continue
            data = conn.recv(65536)
            if not data:
                return
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._handle(line.decode("utf-8", "replace"))

    def _handle(self, line: str) -> None:
        log.debug("bgp %s: from ExaBGP: %s", self.instance, line)
        msg = M.parse(line)
        if msg is None:
            return
        if isinstance(msg, M.Ack):
            with self._lock:
                cmd = self._acks.popleft() if self._acks else ""
            if not msg.ok:
                log.warning("bgp %s: ExaBGP refused %r", self.instance, cmd)
                with self._lock:
                    self._last_error = f"ExaBGP refused the command {cmd!r}"
            return
        try:
            with self._lock:
                events = self._neighbors.apply(msg, time.time())
        except Exception:  # noqa: BLE001 - one odd message must not end the supervision
            log.exception("bgp %s: cannot apply %r", self.instance, msg)
            return
        self._emit(events)

    def _send_changes(self, conn: socket.socket) -> None:
        with self._lock:
            desired = dict(self._desired)
            told = self._told
            cmds: list[str] = []
            for prefix in sorted(set(desired) | set(told)):
                want, had = desired.get(prefix, False), told.get(prefix, False)
                if want == had:
                    continue
                cmds += self._commands(prefix, want)
                told[prefix] = want
            for prefix in [p for p in told if p not in desired]:
                del told[prefix]
            self._acks.extend(cmds)
        if cmds:
            conn.sendall("".join(c + "\n" for c in cmds).encode())

    def _commands(self, prefix: str, announce: bool) -> list[str]:
        try:
            net = ipaddress.ip_network(prefix, strict=False)
        except ValueError:
            log.warning("bgp %s: not a prefix: %r", self.instance, prefix)
            return []
        hop = self.settings.next_hop6 if net.version == 6 else self.settings.next_hop
        family = f"ipv{net.version} unicast"
        return [f"neighbor {nb.address} announce route {net} next-hop {hop}" if announce
                else f"neighbor {nb.address} withdraw route {net}"
                for nb in self.settings.neighbors if nb.family == family]

    def _end(self, proc: subprocess.Popen[bytes], trouble: str) -> str:
        """Make sure ExaBGP is gone; why it ended, for people. `trouble`: why we end it."""
        if proc.poll() is None and not self._stop.is_set() and not trouble:
            try:  # its bridge went: ExaBGP ends by itself in a moment (api terminate)
                proc.wait(1.0)
            except subprocess.TimeoutExpired:
                trouble = "ExaBGP's bridge closed"
        procs.end(proc, STOP_WAIT)
        if self._stop.is_set():
            self._emit([("speaker", "", f"ExaBGP (pid {proc.pid}) stopped")])
            return "ExaBGP stopped"
        if trouble:
            return f"{trouble}: ended ExaBGP (pid {proc.pid})"
        code = proc.returncode
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"ExaBGP (pid {proc.pid}) was killed by {name}"
        if code == EXIT_NETNS:
            return f"ExaBGP could not enter network namespace {self.netns}"
        tail = self._log_tail()
        return f"ExaBGP (pid {proc.pid}) exited with code {code}" + (f": {tail}" if tail else "")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 4096))
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            # "03:34:53 1264   configuration   holdtime must be zero or at least 3 seconds"
            parts = line.split(None, 3)
            text = parts[3] if len(parts) == 4 and parts[0].count(":") == 2 else line.strip()
            if text:
                return " ".join(text.split())[:200]
        return ""
