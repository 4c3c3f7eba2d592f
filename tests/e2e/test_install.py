"""An installed wheel works on its own, not only the source checkout.

The BPF C, probes and themes live at the top of the repository and are
force-included in the wheel: bpf/ and probes/ as xlb/_data/, themes/ as
console/_data/. These tests build a real wheel,
install it into a private --target directory and use that copy from a
subprocess that cannot see the repository: it must find its own C sources and
BCC must compile them into a loadable XDP program.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO

BPF_FILES = ("xlb.c", "xlb_shared.h", "parse.h", "csum.h", "encap.h", "icmp.h", "snat.h",
             "decap.c", "pass.c")


def _run(args: list[str], timeout: float, env: dict[str, str],
         cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=cwd, check=False)


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1",
               PIP_REPO_USER_ACTION="ignore")
    return env


def _build_wheel(out: Path) -> Path:
    """pip wheel the repository; without build isolation when hatchling is at hand."""
    base = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out)]
    attempts = [base + [str(REPO)]]  # isolated: fetches hatchling (PyPI or pip's cache)
    if importlib.util.find_spec("hatchling") is not None:
        attempts.insert(0, base + ["--no-build-isolation", str(REPO)])
    errors = []
    for args in attempts:
        r = _run(args, timeout=120, env=_pip_env())
        wheels = sorted(out.glob("xlb-*.whl"))
        if r.returncode == 0 and wheels:
            return wheels[0]
        errors.append(f"$ {' '.join(args)}\n{r.stdout}{r.stderr}")
    pytest.fail("building the wheel failed:\n" + "\n".join(errors))


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(wheel, site): the repository built into a wheel and installed with --target."""
    tmp = tmp_path_factory.mktemp("install")
    wheel = _build_wheel(tmp / "dist")
    site = tmp / "site"
    r = _run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
              str(wheel)], timeout=120, env=_pip_env())
    assert r.returncode == 0, f"pip install --target failed:\n{r.stdout}{r.stderr}"
    yield wheel, site.resolve()


def _run_installed(site: Path, cwd: Path, code: str, *args: str,
                   timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter that imports xlb and console from `site` only.

    -I would also drop PYTHONPATH, so: -s (no user site), PYTHONPATH=site, a
    cwd outside the repository, and the code itself checks where console came
    from (the dev venv's editable .pth appends the repository to sys.path,
    after PYTHONPATH).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = str(site)
    env.pop("PYTHONHOME", None)
    prelude = textwrap.dedent("""
        import sys
        from pathlib import Path
        SITE = Path(sys.argv[1])
        import console, xlb
        for pkg in (xlb, console):
            where = Path(pkg.__file__).resolve()
            assert where.is_relative_to(SITE), f"{pkg.__name__} imported from {where}, not {SITE}"
    """)
    return _run([sys.executable, "-s", "-c", prelude + textwrap.dedent(code), str(site), *args],
                timeout=timeout, cwd=cwd, env=env)


def test_wheel_ships_bpf_sources_and_themes(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        sources = {p.name for p in (REPO / "bpf").iterdir() if p.suffix in (".c", ".h")}
        assert sources == set(BPF_FILES), "BPF_FILES must list every bpf/ source"
        for f in BPF_FILES:
            name = f"xlb/_data/bpf/{f}"
            assert name in names, f"{wheel.name} lacks {name}"
            assert z.read(name) == (REPO / "bpf" / f).read_bytes(), f"{name} differs from bpf/{f}"
    assert "xlb/resources.py" in names and "console/app.py" in names
    for t in sorted((REPO / "themes").iterdir()):
        assert f"console/_data/themes/{t.name}" in names, f"{wheel.name} lacks theme {t.name}"


def test_installed_copy_finds_its_data(installed: tuple[Path, Path], tmp_path: Path) -> None:
    _, site = installed
    r = _run_installed(site, tmp_path, """
        from xlb import resources
        from console import themes
        d = resources.data_dir("bpf").resolve()
        assert d.is_relative_to(SITE), f"data_dir('bpf') is {d}, not inside {SITE}"
        assert (d / "xlb.c").is_file(), f"{d} has no xlb.c"
        css = themes.stylesheet().resolve()
        assert css.is_relative_to(SITE / "console" / "_data"), f"stylesheet is {css}"
        assert [t.name for t in themes.load_themes()][0] == "xlb-dark"
        print(d)
    """)
    assert r.returncode == 0, f"installed copy failed:\n{r.stdout}{r.stderr}"
    assert Path(r.stdout.strip()) == site / "xlb" / "_data" / "bpf"


@pytest.mark.root
def test_installed_copy_compiles_dataplane(installed: tuple[Path, Path], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("compiling the data plane needs root (BPF): run scripts/test as root")
    _, site = installed
    pin_root = Path(f"/sys/fs/bpf/xlb-install-test-{os.getpid()}")
    pin_root.mkdir()
    try:
        r = _run_installed(site, tmp_path, """
            from xlb import resources
            from xlb.dataplane import loader
            assert resources.data_dir("bpf").resolve().is_relative_to(SITE)
            g = loader.Geometry(ring_size=13, max_vips=2, max_backends=8, max_connections=1024,
                                max_snat=1024)
            l = loader.load("inst-test", g, root=sys.argv[2])
            print(l.prog_id)
        """, str(pin_root))
        assert r.returncode == 0, f"installed copy failed to load xlb.c:\n{r.stdout}{r.stderr}"
        prog_id = int(r.stdout.strip().splitlines()[-1])
        assert prog_id > 0
        assert (pin_root / "inst-test" / "prog").exists()
    finally:
        shutil.rmtree(pin_root, ignore_errors=True)
    assert not pin_root.exists()
