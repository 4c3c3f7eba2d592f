"""Where xlb keeps things on a host: one definition of each root, each movable by an
environment variable (tests and side-by-side labs use them). The defaults are where
admins look: configs in /etc, sockets and runtime state in /run, the audit log in
/var/lib (systemd's RuntimeDirectory= and StateDirectory= make the last two)."""

from __future__ import annotations

import os

CONFIG_ROOT = os.environ.get("XLB_CONFIG_ROOT", "/etc/xlb")    # <instance>.toml
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


def default_config(instance: str) -> str:
    """The config file `xlb agent INSTANCE` reads when --config is not given."""
    return os.path.join(CONFIG_ROOT, f"{instance}.toml")


def default_audit_log(instance: str) -> str:
    return os.path.join(STATE_ROOT, instance, "audit.jsonl")


def help_text() -> str:
    """The default paths, for `xlb --help` and `xlb agent --help`."""
    rows = [(default_config("INSTANCE"), "an instance's config (`xlb agent INSTANCE`)"),
            (default_socket("INSTANCE"), "its agent's API socket"),
            (run_dir("INSTANCE") + "/", "its runtime state (intent, owner lock)"),
            (default_audit_log("INSTANCE"), "its audit log"),
            (os.path.join(PIN_ROOT, "INSTANCE") + "/", "its pinned BPF maps and program")]
    width = max(len(p) for p, _ in rows)
    return "files:\n" + "\n".join(f"  {p:<{width}}  {what}" for p, what in rows)
