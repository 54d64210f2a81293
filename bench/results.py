"""Where every bench writes its JSON: a directory the user chooses (default: the current
one), never inside the installed package; a timestamped file and ``<name>-latest.json``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def add_out_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path("."),
        help="directory the JSON results go to (default: the current directory)",
    )


def write(name: str, result: dict[str, Any], out_dir: Path, default: Any = None) -> Path:
    """Write ``result`` as ``<name>-<timestamp>.json`` and ``<name>-latest.json``; the
    latter's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, default=default)
    (out_dir / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    latest = out_dir / f"{name}-latest.json"
    latest.write_text(text)
    return latest.resolve()
