"""Runtime files' privacy. State files (/run/xlb/<instance>/*.json) are written whole and
readable by the agent's user only (root, or xlb under systemd): they hold the whole
configuration (every VIP and backend, the operators' intent), which others may only see
through the agent's API, under its socket group's rule. The agent's sockets are that
rule: owned by the group, mode 0660.
"""

from __future__ import annotations

import grp
import json
import logging
import os
from typing import Any

from xlb.errors import PrivilegeError

MODE = 0o600
log = logging.getLogger(__name__)


def write_json(path: str, doc: Any, indent: int | None = None) -> None:
    """Replace `path` with `doc` as JSON in one rename, mode 0600 whatever the umask or
    the mode of an older file (the rename replaces it)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, MODE)  # a .tmp left by an older version may have another mode
        json.dump(doc, f, indent=indent)
    os.replace(tmp, path)


def share_with_group(path: str, group: str) -> None:
    """Make a socket openable by root, the agent's user and `group` only (0660); if the
    group does not exist, by root and the agent's user only, and say so. The owner stays
    the agent's user: an agent that is not root (systemd's User=) may give its socket to
    a group it is a member of, and no other (PrivilegeError says which)."""
    try:
        gid = grp.getgrnam(group).gr_gid
    except KeyError:
        log.warning("group %r does not exist: only root and the agent's user can open %s",
                    group, path)
        gid = -1
    try:
        os.chown(path, -1, gid)
    except PermissionError:
        raise PrivilegeError(f"cannot give {path} to group {group!r}: the agent's user is not "
                             "a member (add it, e.g. SupplementaryGroups= in the unit, or "
                             "set socket_group to its own group)") from None
    os.chmod(path, 0o660)
