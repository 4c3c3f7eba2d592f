"""Every error xlb reports, under one root.

An `XlbError` is something a person or a client can act on: its text is one
clear sentence (no traceback), `exit_code` is what the CLI exits with (one of
`ExitCode`, by class: scripts tell "no agent" from "not allowed" from "refused"), and
`rpc_code` is the JSON-RPC error code the agent answers with. The CLI catches
`XlbError` once; the agent's API maps `rpc_code`. Anything that is not an
`XlbError` is a bug: the CLI shows its traceback, the agent logs it and answers
"internal error".

Pure Python with no dependencies: the console, the API client and the agent
all import it.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from enum import IntEnum
from typing import Any


class ErrorCode(IntEnum):
    """JSON-RPC 2.0 error codes of the agent's API (the -320xx ones are xlb's own)."""

    PARSE_ERROR = -32700      # not JSON
    INVALID_REQUEST = -32600  # JSON, but not a JSON-RPC request
    NO_METHOD = -32601        # unknown method
    INVALID_PARAMS = -32602   # bad parameters, or a change the config rules reject
    INTERNAL = -32603         # a bug in the agent: logged there
    READ_ONLY = -32001        # the caller may read but not change
    REFUSED = -32002          # the agent will not do it as asked (e.g. the last healthy backend)
    APPLY_FAILED = -32003     # the data plane refused the change; nothing was applied
    AUDIT_FAILED = -32004     # the audit record could not be written; nothing was applied
    OVERLOADED = -32005       # too many connections, or too slow a reader: disconnected


class ExitCode(IntEnum):
    """What `xlb` exits with; the README's "Errors and exit codes" table lists them."""

    OK = 0
    ERROR = 1          # anything else that went wrong (bad config, apply failed, ...)
    USAGE = 2          # the command line cannot be done as written (argparse, --yes needed)
    UNAVAILABLE = 3    # no agent answers (none running, hung, busy, gone)
    NOT_PERMITTED = 4  # read-only caller, or missing privileges
    REFUSED = 5        # refused as asked: the last healthy backend, another owner or program


class XlbError(Exception):
    """Root of xlb's errors: a message for people, an exit code and an RPC code."""

    exit_code: int = ExitCode.ERROR
    rpc_code = ErrorCode.INTERNAL


class UsageError(XlbError):
    """The command line asks for something that cannot be done as written."""

    exit_code = ExitCode.USAGE
    rpc_code = ErrorCode.INVALID_PARAMS


class InvalidParams(XlbError):
    """An API request with bad parameters (missing, of the wrong type, unknown)."""

    rpc_code = ErrorCode.INVALID_PARAMS


class ConfigError(XlbError):
    """An invalid configuration; `errors` lists every problem found, one per entry."""

    rpc_code = ErrorCode.INVALID_PARAMS

    def __init__(self, errors: str | Iterable[str]) -> None:
        self.errors: list[str] = [errors] if isinstance(errors, str) else list(errors)
        super().__init__(self.errors)

    def __str__(self) -> str:
        return "\n".join(self.errors)


class RefusedError(XlbError):
    """The agent will not do this as asked (unknown VIP or backend, the last healthy
    backend without force, ...)."""

    exit_code = ExitCode.REFUSED
    rpc_code = ErrorCode.REFUSED


class ForeignProgramError(RefusedError):
    """Another XDP program, not this instance's, is attached where xlb would attach: xlb
    does not replace it unless told to (--force). `program` names it (id, name, tag, mode)."""

    def __init__(self, message: str, program: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.program = program or {}


class ReadOnlyError(XlbError):
    """The caller may look but not change."""

    exit_code = ExitCode.NOT_PERMITTED
    rpc_code = ErrorCode.READ_ONLY


class PrivilegeError(XlbError):
    """This needs privileges the process does not have (root: CAP_BPF, CAP_NET_ADMIN)."""

    exit_code = ExitCode.NOT_PERMITTED


class ApplyError(XlbError):
    """The data plane refused a change; the previous state is in force."""

    rpc_code = ErrorCode.APPLY_FAILED


class AuditError(XlbError):
    """The audit record of a change could not be written (a full disk, an I/O error): the
    change was not made."""

    rpc_code = ErrorCode.AUDIT_FAILED


class AttachError(XlbError):
    """The kernel or the environment refused an XDP attach or detach."""

    rpc_code = ErrorCode.APPLY_FAILED


class LayoutError(XlbError):
    """Pinned maps do not match what this version of xlb expects."""

    rpc_code = ErrorCode.APPLY_FAILED


class OwnedError(RefusedError):
    """Another process (the instance's agent) is the one writer of this data plane."""


class PlatformError(XlbError):
    """xlb does not support this machine (an architecture whose bpf(2) number it does
    not know)."""


class CompileError(XlbError):
    """BCC could not compile or load a BPF program."""


class BpfError(XlbError, OSError):
    """A bpf(2) call failed. An OSError too: BpfError(errno, text) keeps the kernel's
    errno, which callers test (ENOENT: no such key)."""


class NotLoadedError(XlbError):
    """No data plane instance (or not the one named) is loaded."""


class AgentUnavailable(XlbError):
    """No agent answers: none is running, its socket is not ours to open, or it went away."""

    exit_code = ExitCode.UNAVAILABLE


class AgentBusy(AgentUnavailable):
    """The agent turned the connection away: too many connections (per user or in all),
    descriptors it keeps for its own work, or a client too slow to read its answers."""

    rpc_code = ErrorCode.OVERLOADED


class AgentError(XlbError):
    """The agent answered a request with an error this side has no better class for."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.rpc_code = code  # type: ignore[assignment]


class LabError(XlbError):
    """The lab cannot do what was asked (not up, a part missing, a process that died)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM stopped a long operation; `str()` says what was undone.
    A KeyboardInterrupt, so no `except Exception` swallows it; the CLI prints it as one
    line and exits 128 + the signal's number."""

    def __init__(self, signum: int, done: str = "") -> None:
        self.signum = signum
        self.done = done
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = f"signal {signum}"
        super().__init__(f"interrupted ({name})" + (f": {done}" if done else ""))

    def __str__(self) -> str:
        return str(self.args[0])


class InstallError(XlbError):
    """xlb's own files (bpf/, themes/, ...) are missing: a broken installation."""


class ThemeError(XlbError):
    """A console theme file is missing, unreadable or wrong."""


class ConsoleError(XlbError):
    """A clear reason the console cannot start (no agent, bad theme, ...)."""


# what an error answer from the agent becomes on the client's side
_BY_RPC_CODE: dict[int, type[XlbError]] = {
    ErrorCode.INVALID_PARAMS: InvalidParams,
    ErrorCode.READ_ONLY: ReadOnlyError,
    ErrorCode.REFUSED: RefusedError,
    ErrorCode.APPLY_FAILED: ApplyError,
    ErrorCode.AUDIT_FAILED: AuditError,
    ErrorCode.OVERLOADED: AgentBusy,
}


def from_rpc(code: int, message: str) -> XlbError:
    """The error an agent's answer {"code", "message"} stands for, as an XlbError."""
    cls = _BY_RPC_CODE.get(code)
    return cls(message) if cls is not None else AgentError(code, message)
