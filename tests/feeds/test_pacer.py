from __future__ import annotations

import pytest

from appliance.feeds.pacer import Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_unpaced_gives_whole_batches():
    t = FakeTime()
    p = Pacer(0, t.clock, t.sleep)
    assert p.allowance(512) == 512
    assert t.slept == []


def test_paced_rate_is_kept_over_time():
    t = FakeTime()
    p = Pacer(10_000, t.clock, t.sleep)
    sent = 0
    while t.now < 102.0:  # two seconds of fake time
        n = p.allowance(256)
        p.sent(n)
        sent += n
        t.now += 0.0001  # the work of writing
    assert sent == pytest.approx(20_000, rel=0.01)


def test_waits_for_half_a_millisecond_worth_instead_of_trickling():
    t = FakeTime()
    p = Pacer(1_000_000, t.clock, t.sleep)
    t.now += 0.0001  # 100 records due, below the 500-record minimum
    assert p.allowance(1024) == 0
    assert t.slept and t.slept[-1] == pytest.approx(0.0004)
    assert p.allowance(1024) == 500


def test_rate_change_restarts_the_schedule():
    t = FakeTime()
    p = Pacer(1000, t.clock, t.sleep)
    t.now += 10.0
    p.set_rate(100)
    t.now += 0.105
    assert p.allowance(1000) == 10
