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
    """What a Tick reports. QUOTE and TRADE carry the current best bid/ask."""

    QUOTE = 1  # best bid/ask changed
    TRADE = 2  # a trade printed: last_price/last_size/side are set
    # The feed lost its source for this symbol (a dropped connection, a restarted feed):
    # ticks may be missing before this one. Its prices and sizes are 0, i.e. unknown, so
    # the market is unknown until the symbol's next QUOTE. Readers count it (``feed_gaps``)
    # and must not use its prices: EMA agents skip it like any one-sided quote (their EMAs
    # bridge the gap); execution's quotes for the symbol become unknown, so market orders
    # are refused (NO_MARKET) until a fresh quote arrives.
    GAP = 3


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
    # Cancel the sending agent's resting orders on ``symbol`` and ``side`` that earlier
    # intents of the same queue placed (lower seq); qty and limit_price are 0. What
    # execution does with one: journal it like any intent; cancel the unfilled rest of
    # every such order (each gets its usual CANCEL report, final, keeping what filled);
    # then answer the cancel intent itself with one ACK report with final = 1, also when
    # nothing was left to cancel. It never trades, so no limit applies to it and it
    # passes in every trading state; only a malformed one (bad side or symbol) is
    # rejected. A replace is a CANCEL followed, once confirmed, by a new LIMIT.
    CANCEL = 3


#: An agent's wish to trade, pushed by an agent host onto its intent queue.
INTENT = _dtype(
    [
        # Position of the intent in its queue (0, 1, 2, ...): with the host id it is the
        # intent's identity, stable across restarts of either side of the queue.
        ("seq", "<u8", 0),
        # Time the agent host created the intent.
        ("created_ns", "<i8", 8),
        # recv_ns of the tick at which the agent decided what this intent carries out
        # (tick-to-intent latency).
        ("tick_ns", "<i8", 16),
        # Signed quantity is not used: qty is positive and side gives the direction.
        ("qty", "<f8", 24),
        # Limit price for LIMIT orders; 0 for MARKET and CANCEL.
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
    # Accepted by risk and the venue (or crossed internally). With final = 1: a CANCEL
    # intent is done (see OrderType.CANCEL).
    ACK = 1
    FILL = 2  # (part of) the intent traded; fill_qty / fill_price / fee are set
    REJECT = 3  # refused; reason says why (RejectReason)
    CANCEL = 4  # a resting order was cancelled; remaining quantity is void


class RejectReason(IntEnum):
    """Why an order ended with quantity unfilled: a reject's reason, or a cancel's cause
    (NO_LIQUIDITY for an IOC remainder, HALTED or REDUCE_ONLY for the cancels a change of
    the trading state makes, VENUE for one the venue made, REQUESTED for an agent's)."""

    NONE = 0
    MAX_POSITION = 1  # the fill would take the agent beyond max_position for the symbol
    MAX_NOTIONAL = 2  # qty * price exceeds max_order_notional for the symbol
    HALTED = 3  # trading is halted (operator, drawdown kill switch or restart-intensity limit)
    NO_MARKET = 4  # no quote known yet for the symbol
    UNKNOWN_SYMBOL = 5  # symbol index outside the instrument table
    BAD_ORDER = 6  # non-positive quantity, bad side, bad type or bad limit price
    VENUE = 7  # the venue refused the order
    NO_LIQUIDITY = 8  # market order found no quoted size to fill against
    MAX_ORDER_QTY = 9  # qty exceeds max_order_qty for the symbol
    PRICE_BAND = 10  # the price is further from the last mid than price_band_bps (fat finger)
    ORDER_RATE = 11  # the agent's or the appliance's order-rate token bucket is empty
    MAX_OPEN_ORDERS = 12  # the agent already has max_open_orders open in the symbol
    MAX_GROSS_EXPOSURE = 13  # the fill would take gross exposure beyond max_gross_exposure
    REDUCE_ONLY = 14  # trading is reduce-only and the intent would not shrink |position|
    CONFLICT = 15  # priority netting: a higher-priority population trades the other way
    # Still queued when the appliance's supervisor died; journaled at the next start and
    # never executed (the market it was decided on is gone).
    STALE_AFTER_CRASH = 16
    # Ends only, never a reject: the rest of the order was withdrawn on request (its agent's
    # CANCEL intent, or an operator's cancel while trading is active).
    REQUESTED = 17


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


class MetricGroup(IntEnum):
    """What one METRIC row describes."""

    NONE = 0  # an unused row
    OVERALL = 1
    POPULATION = 2  # index: population in config order (hosts, then their populations)
    SYMBOL = 3  # index: symbol index
    TOP_AGENT = 4  # index: global agent index (population offset + agent), best net first
    BOTTOM_AGENT = 5  # index: global agent index, worst net first


#: Figures of a METRIC row, in field order (definitions: docs/metrics.md).
METRIC_FIGURES = (
    "net", "gross", "fees", "realized", "unrealized", "turnover", "position", "exposure",
    "sharpe", "sortino", "max_drawdown", "drawdown_s", "fill_rate_orders", "fill_rate_qty",
    "reject_rate", "signal_accuracy",
)  # fmt: skip
#: Counts of a METRIC row, after the figures.
METRIC_COUNTS = ("orders", "orders_filled", "rejects", "samples")

#: One row of the live trading metrics the execution process publishes (a seqlock
#: snapshot, read by `dynamind status` and `top`): 192 bytes, three cache lines. Figures
#: are float64 (NaN: undefined), counts uint64.
METRIC = np.dtype(
    {
        # Who a row is about, so readers need no config to name it: host and population
        # indexes (populations, agents), agent within its population, symbol index.
        "names": ["group", "index", *METRIC_FIGURES, *METRIC_COUNTS, "host", "population",
                  "agent", "symbol"],
        "formats": ["<u4", "<u4", *["<f8"] * len(METRIC_FIGURES), *["<u8"] * len(METRIC_COUNTS),
                    "<u2", "<u2", "<u4", "<u2"],
        "offsets": [0, 4, *range(8, 8 + 8 * len(METRIC_FIGURES), 8),
                    *range(8 + 8 * len(METRIC_FIGURES), 8 + 8 * (len(METRIC_FIGURES)
                                                                + len(METRIC_COUNTS)), 8),
                    168, 170, 172, 176],
        "itemsize": 192,
    }
)  # fmt: skip
