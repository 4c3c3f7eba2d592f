"""Where the non-Python parts (bpf/, probes/, themes/) are.

An installed wheel carries them inside the package that uses them, as
<package>/_data/<name> (bpf/ and probes/ in xlb, themes/ in console); an
editable install or a source checkout has them at the repository top.
"""

from __future__ import annotations

from pathlib import Path

from xlb.errors import InstallError

_PKG = Path(__file__).resolve().parent


def data_dir(name: str, package: Path = _PKG) -> Path:
    """`name`/ of `package` (a package directory; default xlb's own)."""
    for candidate in (package / "_data" / name, package.parent / name):
        if candidate.is_dir():
            return candidate
    raise InstallError(f"xlb's {name}/ directory is missing (looked in {package}/_data and "
                            f"{package.parent}); reinstall xlb")
