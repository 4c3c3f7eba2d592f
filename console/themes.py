"""Themes from themes/*.toml, and the operator's remembered choice.

Colours live in those files, never in code: widgets use the theme's
variables ($success, $error, ...) in the stylesheet themes/xlb.tcss, and
the few cells the code styles itself ask the current theme for a colour by
role (views/base.py, `View.role`).
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

from textual.theme import Theme

from xlb.errors import ThemeError
from xlb.resources import data_dir

CONSOLE = Path(__file__).resolve().parent

DEFAULT = "xlb-dark"
FIELDS = ("primary", "secondary", "accent", "success", "warning", "error", "foreground",
          "background", "surface", "panel", "boost", "dark", "luminosity_spread", "text_alpha",
          "variables")


def load_themes(folder: Path | None = None) -> list[Theme]:
    """Every theme file in themes/ (sorted by name, the default first)."""
    folder = folder or data_dir("themes", CONSOLE)
    themes = []
    for path in sorted(folder.glob("*.toml")):
        try:
            doc = tomllib.loads(path.read_text())
            unknown = set(doc) - set(FIELDS) - {"name"}
            if unknown:
                raise ThemeError(f"unknown keys {sorted(unknown)}")
            themes.append(Theme(name=doc.get("name", path.stem),
                                **{k: v for k, v in doc.items() if k in FIELDS}))
        except (OSError, ValueError, TypeError) as e:
            raise ThemeError(f"theme file {path}: {e}") from e
    themes.sort(key=lambda t: (t.name != DEFAULT, t.name))
    return themes


def stylesheet() -> Path:
    return data_dir("themes", CONSOLE) / "xlb.tcss"


def prefs_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "xlb" / "console.json"


def remembered() -> str | None:
    try:
        value = json.loads(prefs_path().read_text()).get("theme")
        return value if isinstance(value, str) else None
    except (OSError, ValueError, AttributeError):
        return None


def remember(name: str) -> None:
    """Best effort: a read-only home must not break the console."""
    path = prefs_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"theme": name}))
        tmp.replace(path)
    except OSError:
        pass
