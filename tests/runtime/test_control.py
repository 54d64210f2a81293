"""Typed control messages over the control channel: encoding, decoding once at the channel,
bad input dropped with a log line, nothing lost behind a large message, dispatch by type."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import time

import pytest

from appliance.model.enums import Role
from appliance.runtime import layout
from appliance.runtime.children import Child
from appliance.runtime.control import Channel
from appliance.runtime.inbox import Inbox
from appliance.runtime.messages import (
    BadMessage,
    Decoder,
    Down,
    Drain,
    Error,
    Final,
    PositionsCheck,
    Ready,
    Reload,
    Status,
    Stop,
    Up,
    encode,
)
from appliance.runtime.worker import Worker, WorkerSpec
from appliance.shm import Stats, WaitStrategy
from appliance.trading.engine import EngineStatus

ALL_UP = [
    Ready(),
    Status(EngineStatus(fills=3, rejects={"HALTED": 2}, realized=1.5)),
    Error("ValueError: boom"),
    PositionsCheck(40, [(0, 3, 0.5, 0.25)], ""),
    PositionsCheck(0, skipped="execution did not settle in time"),
    Final([(0, 1, 2, 1, -0.25)], journal_matches=True, reported_matches=False),
]
ALL_DOWN = [Stop(), Drain(), Reload({"feed": {"rate": 10.0}})]


def test_every_kind_round_trips_with_its_kind_on_the_wire():
    for union, messages in ((Up, ALL_UP), (Down, ALL_DOWN)):
        decoder = Decoder(union)
        for msg in messages:
            raw = encode(msg)
            assert raw.startswith(b'{"kind":"')
            assert decoder.decode(raw) == msg


def test_execution_figures_are_typed_on_the_wire():
    """Status carries EngineStatus, a struct: a figure of the wrong type or name is a
    refused message, never a dict that half fits."""
    decoder = Decoder(Up)
    msg = Status(EngineStatus(fills=7, realized=-1.5, trading="halted", takes_intents=False))
    assert decoder.decode(encode(msg)) == msg
    with pytest.raises(BadMessage, match=r"Expected `int`, got `str` - at `\$.figures.fills`"):
        decoder.decode(b'{"kind": "status", "figures": {"fills": "seven"}}')
    with pytest.raises(BadMessage, match="unknown field `filled`"):
        decoder.decode(b'{"kind": "status", "figures": {"filled": 7}}')


BAD = [
    b"not json at all",
    b'{"kind": "launch_missiles"}',  # unknown kind
    b'{"fills": 3}',  # no kind
    b'{"kind": "status", "figures": 3}',  # wrong field type
    b'{"kind": "positions_check"}',  # a required field missing
    b'{"kind": "ready", "extra": 1}',  # an unknown field
    b'{"kind": "stop"}',  # a down message on the up channel
]


def test_bad_messages_are_logged_with_their_content_and_dropped(caplog):
    ch = Channel("up")
    ch.send(Ready())
    for raw in BAD:
        assert ch.put_encoded(raw)
    ch.send(Status(EngineStatus(fills=1)))
    with caplog.at_level(logging.ERROR, logger="appliance.runtime.control"):
        got = ch.receive()
    assert got == [Ready(), Status(EngineStatus(fills=1))]
    dropped = [r.getMessage() for r in caplog.records]
    assert len(dropped) == len(BAD)
    for raw, line in zip(BAD, dropped, strict=True):
        assert "dropped a control message (up channel)" in line
        assert repr(raw) in line
    assert "launch_missiles" in dropped[1] and "Invalid value" in dropped[1]
    assert "Expected `object`, got `int`" in dropped[3]


def _send_many_then_final(up: Channel, small: int, positions: int) -> None:
    for i in range(small):
        up.send(Status(EngineStatus(fills=i)))
    up.send(Final([(0, 0, a, a % 2, 0.001 * a) for a in range(positions)], True, True))


def test_a_large_message_behind_many_small_ones_arrives_in_one_receive():
    """Execution's final report (tens of KB) queued behind status messages, from a real
    second process: one receive after it exited gets every message, in order."""
    ctx = mp.get_context("spawn")
    up = Channel("up")
    small, positions = 300, 1500
    p = ctx.Process(target=_send_many_then_final, args=(up, small, positions))
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert len(encode(Final([(0, 0, a, 1, 0.001 * a) for a in range(positions)], True, True))) > (
        20_000
    )
    got = up.receive()
    assert [m.figures.fills for m in got[:-1]] == list(range(small))
    final = got[-1]
    assert isinstance(final, Final) and len(final.positions) == positions
    assert final.positions[-1] == (0, 0, positions - 1, 1, pytest.approx(0.001 * (positions - 1)))
    assert up.receive() == []


@pytest.fixture
def worker(instance, config):
    """A worker context on a real stats segment, as a feed process would have it."""
    stats = Stats.create(instance, layout.STATS, layout.stats_slots(config), layout.COUNTERS)
    process = next(p for p in layout.processes(config) if p.role == Role.FEED)
    spec = WorkerSpec(process, config, [0], WaitStrategy.BLOCK, 1, os.getppid())
    w = Worker(spec, Channel("down"), Channel("up"), stats)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield w
    root.handlers[:], root.level = handlers, level  # a reload sets up logging anew
    w.slot.close()
    stats.destroy()


def _tick(w: Worker) -> bool:
    w._next_tick = 0.0  # tick() acts at most every TICK_S
    return w.tick()


def test_worker_dispatches_down_messages_by_type(worker, config, capsys):
    w = worker
    w.subscribe(Reload)
    faster = config.model_copy(update={"feed": config.feed.model_copy(update={"rate": 123.0})})
    w.down.send(Reload(faster.model_dump(mode="json")))
    assert _tick(w)
    assert w.config.feed.rate == 123.0 and not w.stopping
    (msg,) = w.take_messages()
    assert isinstance(msg, Reload)

    bad = faster.model_dump(mode="json")
    bad["ring_capacity"] = 3
    w.down.send(Reload(bad))
    w.down.put_encoded(b'{"kind": "ready"}')  # an up message on the down channel
    assert not _tick(w)
    assert w.config.feed.rate == 123.0 and w.take_messages() == []
    logged = capsys.readouterr().err  # the reload set up the worker's own log handler
    assert "reload dropped: the config sent is invalid: ring_capacity: must be a power" in logged
    assert "dropped a control message (down channel)" in logged

    w.down.send(Drain())
    assert _tick(w) and w.draining and not w.stopping
    w.down.send(Stop())
    assert _tick(w) and w.stopping
    assert w.take_messages() == []  # not subscribed to stop and drain: flags only


def test_ready_beats_the_heartbeat(worker):
    w = worker
    before = int(w.stats.slots[w.process.stats_slot]["heartbeat_ns"])
    time.sleep(0.01)
    w.send(Ready())
    after = int(w.stats.slots[w.process.stats_slot]["heartbeat_ns"])
    assert after > before
    assert w.up.receive() == [Ready()]


def test_inbox_acts_on_each_kind(caplog):
    child = Child(layout.Process(Role.EXECUTION, Role.EXECUTION, 1), [0], up=Channel("up"))
    for msg in ALL_UP:
        child.up.send(msg)
    inbox = Inbox()
    with caplog.at_level(logging.INFO, logger="appliance.runtime.inbox"):
        inbox.read(child)
    assert child.ready
    assert inbox.last_status["execution"].fills == 3
    text = caplog.text
    assert "execution reported: ValueError: boom" in text
    assert "agents DIFFER from execution" in text and "(0, 3, 0.5, 0.25)" in text
    assert "0 settled agents agree with execution (execution did not settle" in text
    assert "final positions: 1 non-flat, journal agrees, reported to hosts DIFFERS" in text
