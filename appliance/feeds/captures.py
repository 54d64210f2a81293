"""Raw exchange captures as TICK records: the websocket frames a venue really sent.

A capture folder holds (format of ``shared/data``, see tests/data/README.md):

- ``exchangeInfo.http``: ``URL -> RECV_TS: BODY``, the venue's markets (Binance's
  ``/api/v3/exchangeInfo``): names, tick and lot sizes;
- ``depth.http``: one REST order-book snapshot per symbol, same line format;
- ``stream.ws``: ``WS_URL <-> CONNECT_TS`` then ``RECV_TS: FRAME`` per line, FRAME the
  combined-stream JSON (``{"stream": ..., "data": ...}``) exactly as received.

Frames become ticks in the order they were received: ``bookTicker`` a QUOTE (best bid/ask
and sizes), ``aggTrade`` a TRADE (price, quantity, aggressor side: ``m`` true means the
buyer was the maker, so the seller took) carrying the symbol's latest quote. With
``depth=True`` the order book is also kept from the REST snapshot and the ``depth``
updates (Binance's diff-depth rules: updates up to the snapshot's ``lastUpdateId`` are
dropped), and a QUOTE is made whenever its top changes; by default bookTicker alone
gives the top (depth arrives in 100 ms batches, so its top lags bookTicker's and would
make the quote jump back). Other streams (klines) are skipped.

``recv_ns`` is the capture's receive time (the clock a backtest runs on); ``ts_ns`` the
exchange's event time where the frame has one (``E``), else the receive time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson

from appliance.model.instruments import Instrument
from appliance.model.records import TICK, Side, TickKind

STREAM = "stream.ws"
MARKETS = "exchangeInfo.http"
DEPTH = "depth.http"


class CaptureError(ValueError):
    """A capture that cannot be read; the message names the file and line."""


def is_capture(path: str | os.PathLike[str]) -> bool:
    return (Path(path) / STREAM).is_file()


def _http_body(path: Path, line: str, number: int) -> tuple[str, float, bytes]:
    try:
        url, rest = line.split(" -> ", 1)
        ts, body = rest.split(": ", 1)
        return url, float(ts), body.encode()
    except ValueError:
        raise CaptureError(f"{path}:{number}: expected 'URL -> RECV_TS: BODY'") from None


def read_markets(folder: str | os.PathLike[str]) -> dict[str, Instrument]:
    """The venue's markets by venue id, from ``exchangeInfo.http``."""
    path = Path(folder) / MARKETS
    try:
        line = path.read_text().splitlines()[0]
    except (OSError, IndexError) as exc:
        raise CaptureError(f"{path}: cannot read the venue's markets ({exc})") from None
    _, _, body = _http_body(path, line, 1)
    out = {}
    try:
        for s in orjson.loads(body)["symbols"]:
            filters = {f["filterType"]: f for f in s["filters"]}
            out[s["symbol"]] = Instrument(
                f"{s['baseAsset']}/{s['quoteAsset']}",
                lot_size=float(filters["LOT_SIZE"]["stepSize"]),
                tick_size=float(filters["PRICE_FILTER"]["tickSize"]),
                venue_symbol=s["symbol"],
            )
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CaptureError(f"{path}:1: not an exchangeInfo body ({exc!r})") from None
    return out


class _Book:
    """One symbol's order book from a snapshot and diff updates (price -> size)."""

    def __init__(self, snapshot: dict) -> None:
        self.last_id = int(snapshot["lastUpdateId"])
        self.bids = {float(p): float(q) for p, q in snapshot["bids"]}
        self.asks = {float(p): float(q) for p, q in snapshot["asks"]}

    def apply(self, update: dict) -> bool:
        """Apply one diff; False if it is older than the book."""
        if int(update["u"]) <= self.last_id:
            return False
        for side, levels in ((self.bids, update["b"]), (self.asks, update["a"])):
            for p, q in levels:
                if float(q) == 0.0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
        self.last_id = int(update["u"])
        return True

    def top(self) -> tuple[float, float, float, float]:
        bid = max(self.bids) if self.bids else 0.0
        ask = min(self.asks) if self.asks else 0.0
        return bid, self.bids.get(bid, 0.0), ask, self.asks.get(ask, 0.0)


class CaptureSource:
    """The ticks of one capture folder (see the module docstring)."""

    def __init__(self, folder: str | os.PathLike[str], *, depth: bool = False) -> None:
        self.folder = Path(folder)
        self.depth = depth
        self.markets = read_markets(self.folder)
        ids = self._subscribed()
        missing = [i for i in ids if i not in self.markets]
        if missing:
            raise CaptureError(f"{self.folder / MARKETS}: no market for streamed {missing}")
        self.venue_ids = ids
        #: Unified names in the order their streams were subscribed: the source's symbols.
        self.symbols = tuple(self.markets[i].name for i in ids)
        self.instruments = [self.markets[i] for i in ids]
        self._parsed: list[tuple] | None = None

    def _subscribed(self) -> list[str]:
        path = self.folder / STREAM
        with path.open() as f:
            first = f.readline()
        url, sep, _ = first.partition(" <-> ")
        if not sep or "streams=" not in url:
            raise CaptureError(f"{path}:1: expected 'WS_URL?streams=... <-> CONNECT_TS'")
        ids = []
        for stream in url.split("streams=", 1)[1].split("/"):
            venue_id = stream.split("@", 1)[0].upper()
            if venue_id not in ids:
                ids.append(venue_id)
        return ids

    def _books(self) -> dict[str, _Book]:
        path = self.folder / DEPTH
        books = {}
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            url, _, body = _http_body(path, line, n)
            venue_id = url.split("symbol=", 1)[1].split("&", 1)[0]
            books[venue_id] = _Book(orjson.loads(body))
        return books

    def count(self) -> int:
        return len(self._rows())

    def _rows(self) -> list[tuple]:
        if self._parsed is None:  # parsed once: count() and chunks() share it
            self._parsed = list(self._ticks())
        return self._parsed

    def chunks(self, size: int = 65536) -> Iterator[np.ndarray]:
        """TICK arrays of at most ``size`` records, in receive order."""
        rows = self._rows()
        for start in range(0, len(rows), size):
            part = rows[start : start + size]
            out = np.zeros(len(part), TICK)
            for name, col in zip(_COLUMNS, zip(*part, strict=True), strict=True):
                out[name] = col
            out["seq"] = np.arange(start, start + len(part))
            yield out

    def _ticks(self) -> Iterator[tuple]:
        index = {v: i for i, v in enumerate(self.venue_ids)}
        n = len(index)
        quote = np.zeros((n, 4))  # bid, bid size, ask, ask size per symbol
        last = np.zeros(n)
        books = self._books() if self.depth else {}
        path = self.folder / STREAM
        with path.open() as f:
            f.readline()
            for number, line in enumerate(f, 2):
                if not line.strip():
                    continue
                recv, frame = self._frame(path, line, number)
                if frame is None:
                    continue
                kind = frame["stream"].split("@", 1)[1]
                d = frame["data"]
                s = index.get(d.get("s", ""))
                if s is None:
                    continue
                recv_ns = round(recv * 1e9)
                ts_ns = int(d["E"]) * 1_000_000 if "E" in d else recv_ns
                if kind == "bookTicker":
                    quote[s] = (float(d["b"]), float(d["B"]), float(d["a"]), float(d["A"]))
                elif kind.startswith("depth") and self.venue_ids[s] in books:
                    book = books[self.venue_ids[s]]
                    if not book.apply(d) or book.top() == tuple(quote[s]):
                        continue
                    quote[s] = book.top()
                elif kind == "aggTrade":
                    last[s] = float(d["p"])
                    side = Side.SELL if d["m"] else Side.BUY
                    yield (ts_ns, recv_ns, *quote[s][[0, 2]], last[s], quote[s][1],
                           quote[s][3], float(d["q"]), s, TickKind.TRADE, side)  # fmt: skip
                    continue
                else:
                    continue
                yield (ts_ns, recv_ns, quote[s][0], quote[s][2], last[s], quote[s][1],
                       quote[s][3], 0.0, s, TickKind.QUOTE, Side.NONE)  # fmt: skip

    @staticmethod
    def _frame(path: Path, line: str, number: int) -> tuple[float, dict | None]:
        ts, sep, body = line.partition(": ")
        if not sep:
            raise CaptureError(f"{path}:{number}: expected 'RECV_TS: FRAME'")
        try:
            frame = orjson.loads(body)
            return float(ts), frame if "stream" in frame and "data" in frame else None
        except (orjson.JSONDecodeError, ValueError, TypeError):
            raise CaptureError(f"{path}:{number}: not a JSON frame after the time") from None


_COLUMNS = ("ts_ns", "recv_ns", "bid", "ask", "last_price", "bid_size", "ask_size",
            "last_size", "symbol", "kind", "side")  # fmt: skip
