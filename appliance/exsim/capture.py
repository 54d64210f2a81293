"""Reading a capture folder: what an exchange really sent, as the data README describes it.

A folder holds ``exchangeInfo.http`` (one ``URL -> RECV_TS: BODY`` line), ``depth.http`` (one
such line per symbol: the REST book snapshot taken when the stream started) and
``stream.ws`` (``WS_URL <-> CONNECT_TS``, then ``RECV_TS: FRAME`` per combined-stream frame).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CaptureError(ValueError):
    """A capture folder is missing a file or holds a line that does not parse."""


@dataclass(frozen=True)
class Frame:
    """One combined-stream frame: ``stream`` is e.g. ``crvusdt@bookTicker``."""

    recv_ts: float  # local receive time, seconds since the epoch
    stream: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Capture:
    exchange_info: dict[str, Any]
    depth: dict[str, dict[str, Any]]  # exchange symbol id -> depth snapshot body
    frames: list[Frame]
    ws_url: str

    def streams(self) -> set[str]:
        return {f.stream for f in self.frames}


def _http_line(line: str, where: str) -> tuple[str, dict[str, Any]]:
    url, sep, rest = line.partition(" -> ")
    _, sep2, body = rest.partition(": ")
    if not (sep and sep2):
        raise CaptureError(f"{where}: expected 'URL -> RECV_TS: BODY'")
    try:
        return url, json.loads(body)
    except ValueError as exc:
        raise CaptureError(f"{where}: body is not JSON ({exc})") from None


def _lines(path: Path) -> list[tuple[int, str]]:
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]


def load_capture(folder: str | Path) -> Capture:
    """Parse the capture in ``folder``; CaptureError naming the file and line if malformed."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaptureError(f"{folder}: not a folder")
    info_lines = _lines(folder / "exchangeInfo.http")
    if len(info_lines) != 1:
        raise CaptureError(f"{folder / 'exchangeInfo.http'}: expected exactly one line")
    _, info = _http_line(info_lines[0][1], f"{folder / 'exchangeInfo.http'}:1")
    depth = {}
    for n, line in _lines(folder / "depth.http"):
        url, body = _http_line(line, f"{folder / 'depth.http'}:{n}")
        symbol = url.partition("symbol=")[2].partition("&")[0]
        if not symbol or "lastUpdateId" not in body:
            raise CaptureError(f"{folder / 'depth.http'}:{n}: not a depth snapshot of a symbol")
        depth[symbol] = body
    lines = _lines(folder / "stream.ws")
    if not lines or " <-> " not in lines[0][1]:
        raise CaptureError(f"{folder / 'stream.ws'}:1: expected 'WS_URL <-> CONNECT_TS'")
    ws_url = lines[0][1].partition(" <-> ")[0]
    frames = []
    for n, line in lines[1:]:
        ts, _, text = line.partition(": ")
        try:
            msg = json.loads(text)
            frames.append(Frame(float(ts), msg["stream"], msg["data"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise CaptureError(
                f"{folder / 'stream.ws'}:{n}: not 'RECV_TS: FRAME' ({exc})"
            ) from None
    return Capture(info, depth, frames, ws_url)
