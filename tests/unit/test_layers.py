"""The layering the package names promise, checked on the source and in a fresh interpreter.

- `console` (the Textual app) imports nothing of xlb but the API (xlb.api) and a few
  pure helpers; so it can never open a BPF map or load the data plane.
- `xlb.api` imports neither the data plane nor Textual, and importing the client loads
  none of numpy, bcc, pyroute2 or textual.
- Only the `console` command imports `console`, and only when it runs.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

# what the console may import of xlb: the API and pure helpers (no I/O, no kernel)
CONSOLE_MAY_IMPORT = {"xlb.api", "xlb.api.client", "xlb.api.protocol", "xlb.errors",
                      "xlb.units", "xlb.resources"}
HEAVY = ("numpy", "bcc", "pyroute2", "textual", "rich", "prometheus_client", "psutil")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level?) for every import in a file; relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    top_level = {id(n) for n in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, id(node) in top_level) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]
            # `from xlb.api import protocol` imports xlb.api.protocol
            out += [(n if n in CONSOLE_MAY_IMPORT else base, id(node) in top_level)
                    for n in names]
    return out


def sources(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


@pytest.mark.parametrize("path", sources("console"), ids=lambda p: str(p.relative_to(REPO)))
def test_console_imports_only_the_api_of_xlb(path: Path) -> None:
    for module, _ in imports(path):
        if module == "xlb" or module.startswith("xlb."):
            assert module in CONSOLE_MAY_IMPORT, (
                f"{path.relative_to(REPO)} imports {module}: the console may use only "
                f"{sorted(CONSOLE_MAY_IMPORT)}")


@pytest.mark.parametrize("path", sources("xlb/api"), ids=lambda p: str(p.relative_to(REPO)))
def test_the_api_imports_neither_the_data_plane_nor_textual(path: Path) -> None:
    for module, _ in imports(path):
        root = module.split(".")[0]
        assert root not in ("textual", "console", "numpy", "bcc", "pyroute2"), (path, module)
        assert not module.startswith(("xlb.dataplane", "xlb.agent", "xlb.lab", "xlb.cli")), (
            path, module)


def test_only_the_console_command_imports_the_console_lazily() -> None:
    found = []
    for path in sources("xlb"):
        for module, top in imports(path):
            if module == "console" or module.startswith("console."):
                found.append((str(path.relative_to(REPO)), top))
    assert found, "the console command must import the console somewhere"
    assert {p for p, _ in found} == {"xlb/cli/console.py"}, found
    assert not any(top for _, top in found), "imported at module level: must be lazy"


def loaded_by(code: str) -> list[str]:
    """The modules a fresh interpreter has loaded after running `code`."""
    r = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\n"
                        "print(json.dumps(sorted(sys.modules)))"],
                       capture_output=True, text=True, cwd=REPO, timeout=60, check=True)
    return list(json.loads(r.stdout.strip().splitlines()[-1]))


def test_importing_the_api_client_loads_nothing_heavy() -> None:
    mods = loaded_by("import xlb.api.client, xlb.api.protocol")
    heavy = [m for m in mods if m.split(".")[0] in HEAVY]
    assert heavy == []
    assert not [m for m in mods if m.startswith(("xlb.dataplane", "xlb.agent", "console"))]


def test_the_cli_parser_loads_no_console_and_no_data_plane() -> None:
    mods = loaded_by("from xlb.cli import build_parser; build_parser()")
    assert not [m for m in mods if m.split(".")[0] in HEAVY + ("console",)]
    # the one part of the lab it may load: the traffic generator's options (argparse only)
    assert not [m for m in mods if m.startswith(("xlb.dataplane", "xlb.agent", "xlb.lab"))
                and m not in ("xlb.lab", "xlb.lab.traffic_args")]
