"""Tick runs on the wire and the subscriber's sequencing: plain logic, no server."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.cluster.ticks import (
    TickSequencer,
    decode_ticks,
    gap_ticks,
    symbols_layout,
    tick_headers,
)
from appliance.cluster.wire import COUNT, MSG_ID, Run, WireError
from appliance.model.records import TICK, TickKind

LAYOUT = symbols_layout(["BTC/USDT", "ETH/USDT"])


def ticks(first: int, n: int) -> np.ndarray:
    out = np.zeros(n, TICK)
    out["seq"] = np.arange(first, first + n)
    out["bid"], out["ask"], out["kind"] = 100.0, 101.0, TickKind.QUOTE
    out["recv_ns"] = 1_000 + out["seq"]
    return out


def run(epoch: int, first: int, n: int) -> Run:
    return Run("src", epoch, first, LAYOUT, ticks(first, n))


def test_a_run_decodes_to_the_same_rows_and_names_itself():
    rows = ticks(40, 5)
    headers = tick_headers("src", 7, rows, LAYOUT)
    assert headers[MSG_ID] == "src.7.40+5"
    got = decode_ticks(rows.tobytes(), headers, LAYOUT)
    assert (got.source, got.epoch, got.first, got.end) == ("src", 7, 40, 45)
    assert got.rows.tobytes() == rows.tobytes()


@pytest.mark.parametrize(
    ("mangle", "error"),
    [
        (lambda d, h: (d[:-1], h), "bytes for 5 records"),
        (lambda d, h: (d, {**h, COUNT: "x"}), "not an integer"),
        (lambda d, h: (ticks(41, 5).tobytes(), h), "not numbered 40..44"),
    ],
)
def test_a_mangled_run_is_a_clear_error(mangle, error):
    rows = ticks(40, 5)
    data, headers = mangle(rows.tobytes(), tick_headers("src", 7, rows, LAYOUT))
    with pytest.raises(WireError, match=error):
        decode_ticks(data, headers, LAYOUT)


def test_a_run_for_another_symbol_table_is_refused():
    rows = ticks(0, 2)
    with pytest.raises(WireError, match="symbols"):
        decode_ticks(rows.tobytes(), tick_headers("src", 1, rows, "other"), LAYOUT)


def test_consecutive_runs_pass_unchanged():
    s = TickSequencer(2)
    assert len(s.accept(run(1, 100, 3), 0)) == 3  # a fresh subscriber lost nothing
    out = s.accept(run(1, 103, 2), 0)
    assert out["seq"].tolist() == [103, 104] and s.gaps == 0


def test_a_hole_becomes_gap_ticks_for_every_symbol_and_an_exact_count():
    s = TickSequencer(2, epoch=1, next_seq=10)
    out = s.accept(run(1, 25, 3), 555)
    gaps = out[:2]
    assert (gaps["kind"] == TickKind.GAP).all() and gaps["symbol"].tolist() == [0, 1]
    assert (gaps["seq"] == 10).all() and (gaps["recv_ns"] == 555).all()
    assert (gaps["bid"] == 0).all() and (gaps["ask"] == 0).all()  # the market is unknown
    assert out["seq"][2:].tolist() == [25, 26, 27]
    assert (s.gaps, s.missing, s.restarts, s.next_seq) == (1, 15, 0, 28)


def test_an_overlap_drops_what_was_written():
    s = TickSequencer(2, epoch=1, next_seq=10)
    assert s.accept(run(1, 8, 4), 0)["seq"].tolist() == [10, 11]
    assert len(s.accept(run(1, 5, 3), 0)) == 0 and s.next_seq == 12


@pytest.mark.parametrize("epoch", [None, 1])
def test_a_restarted_or_unknown_source_is_a_gap_of_unknown_size(epoch):
    s = TickSequencer(2, epoch=epoch, next_seq=500)
    out = s.accept(run(2, 0, 4), 0)
    assert (out["kind"][:2] == TickKind.GAP).all() and (out["seq"][:2] == 500).all()
    assert out["seq"][2:].tolist() == [0, 1, 2, 3]
    assert (s.epoch, s.next_seq, s.missing, s.restarts) == (2, 4, 0, 1)


def test_mirror_gaps_make_quotes_unknown_as_the_ccxt_feeds_do():
    from appliance.venues.base import QuoteBook

    book = QuoteBook(2)
    book.update(ticks(0, 1))
    assert book.bid[0] == 100.0
    book.update(gap_ticks(1, 2, 0))
    assert np.isnan(book.bid).all()
