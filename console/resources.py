"""Where the non-Python parts (bpf/, probes/, themes/) are.

An installed wheel carries them as console/_data/<name>; an editable install
or a source checkout has them at the repository top, beside console/.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"xlb's {name}/ directory is missing (looked in {_PKG}/_data and "
                            f"{_PKG.parent}); reinstall xlb")
