"""Where every bench writes its JSON: a directory the user chooses (default: the current
one), never inside the installed package; a timestamped file and ``<name>-latest.json``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from appliance.runtime import logs


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


def bench_args(prog: str, quick_help: str, argv: list[str] | None) -> argparse.Namespace:
    """``--quick`` and ``--out-dir`` of a bench, with every process's logging at WARNING
    (workers inherit it: the table stays readable)."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    add_out_dir(parser)
    args = parser.parse_args(argv)
    os.environ["DYNAMIND_LOG_LEVEL"] = "WARNING"
    logs.setup("text", level=logging.WARNING, process="bench")
    return args


def stamp(name: str, quick: bool) -> dict[str, Any]:
    """The fields every bench result starts with."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"bench": name, "quick": quick, "time": now}
