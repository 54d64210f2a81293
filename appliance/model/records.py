"""The record dtypes that cross process boundaries. This module is their only owner.

Every record is a fixed 64-byte numpy structured dtype (one cache line), so a batch of
records is one contiguous array that shared-memory rings and queues move without
pickling. Field offsets are explicit and asserted at import time: a layout change here is
a layout-version change for every segment that holds these records.

Conventions: times are integer nanoseconds since the Unix epoch (``time.time_ns()``, the
same clock in every process); prices are float64 in quote currency; quantities are
float64 in base units, except the quoted sizes in a Tick (float32: display sizes need
about seven significant digits, and the 64-byte budget is tight).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

RECORD_SIZE = 64


def _dtype(fields: list[tuple[str, str, int]]) -> np.dtype:
    """A packed structured dtype from (name, format, offset) rows, checked to be 64 bytes."""
    names, formats, offsets = zip(*fields, strict=True)
    dt = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": RECORD_SIZE})
    end = max(off + np.dtype(fmt).itemsize for _, fmt, off in fields)
    if end != RECORD_SIZE:
        raise AssertionError(f"record layout leaves {RECORD_SIZE - end} bytes unused")
    return dt


class TickKind(IntEnum):
    """What a Tick reports. QUOTE and TRADE ticks carry the current best bid/ask."""

    QUOTE = 1  # best bid/ask changed
    TRADE = 2  # a trade printed: last_price/last_size/side are set
    GAP = 3  # ticks were lost just before this record: see gap_tick for its fields


class Side(IntEnum):
    """Direction of an order or of a trade's aggressor."""

    SELL = -1
    NONE = 0
    BUY = 1


#: One market-data event for one symbol, as the feed writes it into the BroadcastRing.
TICK = _dtype(
    [
        # Feed sequence number: +1 per tick written by a feed, continued across feed
        # restarts from the ring's publish cursor, so a reader can check order and gaps.
        ("seq", "<u8", 0),
        # Event time at the source (exchange time, or generation time for synthetic).
        ("ts_ns", "<i8", 8),
        # Time the feed wrote the record into the ring; latency is measured from here.
        ("recv_ns", "<i8", 16),
        # Best bid and ask prices after this event.
        ("bid", "<f8", 24),
        ("ask", "<f8", 32),
        # Price of the trade (TRADE), or the last traded price known to the feed (QUOTE).
        ("last_price", "<f8", 40),
        # Quantities at the best bid and ask.
        ("bid_size", "<f4", 48),
        ("ask_size", "<f4", 52),
        # Quantity of the trade (TRADE); 0 for QUOTE.
        ("last_size", "<f4", 56),
        # Index of the symbol in the config's symbol list (the instrument table).
        ("symbol", "<u2", 60),
        # TickKind.
        ("kind", "u1", 62),
        # Aggressor Side of a TRADE (BUY: the buyer lifted the ask); 0 for QUOTE.
        ("side", "i1", 63),
    ]
)


class OrderType(IntEnum):
    MARKET = 1  # fill now at the best opposite price
    LIMIT = 2  # rest at limit_price until the market trades or quotes through it


#: An agent's wish to trade, pushed by an agent host onto its intent queue.
INTENT = _dtype(
    [
        # Position of the intent in its queue (0, 1, 2, ...): with the host id it is the
        # intent's identity, stable across restarts of either side of the queue.
        ("seq", "<u8", 0),
        # Time the agent host created the intent.
        ("created_ns", "<i8", 8),
        # recv_ns of the tick whose batch produced the intent (tick-to-intent latency).
        ("tick_ns", "<i8", 16),
        # Signed quantity is not used: qty is positive and side gives the direction.
        ("qty", "<f8", 24),
        # Limit price for LIMIT orders; 0 for MARKET.
        ("limit_price", "<f8", 32),
        # Agent index within its host (global agent id = host's first agent + agent).
        ("agent", "<u4", 40),
        # Index of the population within the host that owns the agent.
        ("population", "<u2", 44),
        # Agent host id (index in the config's host list).
        ("host", "<u2", 46),
        # Symbol index.
        ("symbol", "<u2", 48),
        # Side (BUY or SELL).
        ("side", "i1", 50),
        # OrderType.
        ("order_type", "u1", 51),
        # Reserved, zero.
        ("_reserved", "V12", 52),
    ]
)


class ReportKind(IntEnum):
    ACK = 1  # accepted by risk and the venue (or crossed internally)
    FILL = 2  # (part of) the intent traded; fill_qty / fill_price / fee are set
    REJECT = 3  # refused; reason says why (RejectReason)
    CANCEL = 4  # a resting order was cancelled; remaining quantity is void


class RejectReason(IntEnum):
    NONE = 0
    MAX_POSITION = 1  # the fill would take the agent beyond max_position for the symbol
    MAX_NOTIONAL = 2  # qty * price exceeds max_order_notional for the symbol
    HALTED = 3  # trading is halted (operator or restart-intensity limit)
    NO_MARKET = 4  # no quote known yet for the symbol
    UNKNOWN_SYMBOL = 5  # symbol index outside the instrument table
    BAD_ORDER = 6  # non-positive quantity, bad side, bad type or bad limit price
    VENUE = 7  # the venue refused the order
    NO_LIQUIDITY = 8  # market order found no quoted size to fill against


#: The execution process's answer about one intent, pushed onto the host's report queue.
REPORT = _dtype(
    [
        # Position of the report in its queue.
        ("seq", "<u8", 0),
        # seq of the intent this report is about.
        ("intent_seq", "<u8", 8),
        # Time the execution process produced the report.
        ("ts_ns", "<i8", 16),
        # Quantity filled by this report (FILL), always positive; side gives direction.
        ("fill_qty", "<f8", 24),
        # Price of this fill (FILL).
        ("fill_price", "<f8", 32),
        # Fee charged for this fill, in quote currency (FILL).
        ("fee", "<f8", 40),
        # Agent index within its host.
        ("agent", "<u4", 48),
        # Population index within the host.
        ("population", "<u2", 52),
        # Symbol index.
        ("symbol", "<u2", 54),
        # ReportKind.
        ("kind", "u1", 56),
        # RejectReason for REJECT, else 0.
        ("reason", "u1", 57),
        # Side of the intent.
        ("side", "i1", 58),
        # 1 when the intent is finished (filled, rejected or cancelled), else 0.
        ("final", "u1", 59),
        # Reserved, zero.
        ("_reserved", "V4", 60),
    ]
)


#: One cell of a host's positions snapshot: the signed position, in base units, of one
#: agent (row) in one symbol (column), as the execution side holds it.
POSITION = np.dtype("<f8")


#: The ``symbol`` of a record that concerns every symbol (a GAP record).
ALL_SYMBOLS = 0xFFFF


def gap_tick(seq: int, missing: int | None, now_ns: int) -> np.ndarray:
    """One GAP record: the feed knows ticks are missing from its source just before it.

    - ``seq``: the first missing sequence number (what the next tick would have carried
      had nothing been lost), in the source's numbering;
    - ``last_price``: how many ticks are missing (a whole number, exact in a float64 up to
      2**53), or NaN when that is unknown: the source restarted (its numbering starts
      again, so the next record's seq may be lower) or the feed lost its place;
    - ``symbol``: ALL_SYMBOLS, since any symbol may have lost ticks;
    - ``bid``/``ask``: NaN and sizes 0, so code that only looks for a sound quote skips it
      (and per-symbol tables ignore a symbol outside them);
    - ``ts_ns`` = ``recv_ns``: when the feed found the gap; ``side``: 0.

    A reader checking continuity: after a GAP record with a known count the next record's
    seq is ``seq + missing``; otherwise the stream starts afresh at the next record.
    """
    out = np.zeros(1, TICK)
    out["seq"] = seq
    out["ts_ns"] = now_ns
    out["recv_ns"] = now_ns
    out["bid"] = np.nan
    out["ask"] = np.nan
    out["last_price"] = np.nan if missing is None else float(missing)
    out["symbol"] = ALL_SYMBOLS
    out["kind"] = TickKind.GAP
    return out
