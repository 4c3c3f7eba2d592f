"""Where xlb keeps things on a host: one definition of each root, each movable by an
environment variable (tests and side-by-side labs use them)."""

from __future__ import annotations

import os

PIN_ROOT = os.environ.get("XLB_PIN_ROOT", "/sys/fs/bpf/xlb")   # pinned maps, per instance
RUN_ROOT = os.environ.get("XLB_RUN_ROOT", "/run/xlb")          # sockets, runtime state
STATE_ROOT = os.environ.get("XLB_STATE_ROOT", "/var/lib/xlb")  # audit logs


def run_dir(instance: str, root: str = RUN_ROOT) -> str:
    return os.path.join(root, instance)


def default_socket(instance: str) -> str:
    """The agent's API socket of an instance."""
    return os.path.join(RUN_ROOT, f"{instance}.sock")


def pinned_instances(pin_root: str = PIN_ROOT) -> list[str]:
    """The instances whose data plane is loaded (their maps pinned under `pin_root`)."""
    try:
        return sorted(d for d in os.listdir(pin_root)
                      if os.path.exists(os.path.join(pin_root, d, "meta")))
    except FileNotFoundError:
        return []
