"""A lab client script in the client namespace, as a context manager: started by `with`
(its first line of output says it is under way), stopped by SIGTERM, its last line a
JSON summary. The long-lived connections and the UDP stream are two of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from xlb.errors import LabError
from xlb.lab import topology


class ClientScript:
    proc: subprocess.Popen[str]

    def _start(self, module: str, *args: str, what: str) -> str:
        """Run `python -m module args` in the client namespace; its first line."""
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", topology.CLIENT, sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise LabError(f"{what} ({self.proc.returncode})")
        return line

    def stop(self) -> dict[str, Any]:
        """End it (SIGTERM) and return its summary."""
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
