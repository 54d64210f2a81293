"""Market data across instances: a bridge publishes one ring, a nats feed fills another.

Real appliances (`dynamind run`), a real nats-server. What is checked crossed two process
boundaries and the network: the mirror's ring holds the source's records byte for byte,
restarts of either end lose and repeat nothing, and a subscriber that fell behind the
stream's retention finds a GAP record with the exact number of ticks it missed.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from appliance.model.records import TickKind
from tests.cluster.instances import START_S, make, ring_records

pytestmark = pytest.mark.timeout(600)  # two instances, each half a dozen processes


@pytest.fixture
def pair(tmp_path, nats_server):
    """Source (synthetic feed, bridge) and mirror (nats feed), both with execution."""
    made = []

    def build(rate: int = 1000):
        src = make(tmp_path, "src", nats_server.urls, "md", publish_ticks=True, rate=rate)
        dst = make(
            tmp_path, "dst", nats_server.urls, "md", feed_kind="nats", ticks_from=src.instance
        )
        made.extend([src, dst])
        return src, dst

    yield build
    for app in made:
        if not app.kill_all():
            assert app.leftovers() == [], "segments left behind"


def continuous(records: np.ndarray) -> list[tuple[int, int]]:
    """Every tick follows the one before it, or GAP ticks (one per symbol, numbered with
    the first missing tick) stand between them; (gap's seq, ticks missing) of each gap."""
    gap = records["kind"] == TickKind.GAP
    seq = records["seq"].astype(np.int64)
    out = []
    i = 1
    while i < len(records):
        if gap[i]:
            j = i
            while j < len(records) and gap[j]:
                assert seq[j] == seq[i], f"GAP ticks {i}..{j} carry different seqs"
                j += 1
            assert j - i == 2, "one GAP tick per symbol"
            assert seq[i] == seq[i - 1] + 1, "a GAP is numbered with the first missing tick"
            if j < len(records):
                out.append((int(seq[i]), int(seq[j] - seq[i])))
            i = j + 1
            continue
        assert seq[i] == seq[i - 1] + 1, f"record {i}: {seq[i - 1]} then {seq[i]}"
        i += 1
    return out


def test_the_mirror_holds_the_source_records_across_restarts(pair):
    src, dst = pair()
    # The source ring holds four minutes of ticks: a restarted bridge finds where it
    # stopped, however long a busy machine takes to start it again.
    text = src.config.read_text().replace("ring_capacity = 16384", "ring_capacity = 262144")
    src.config.write_text(text)
    dst.start().wait_ready(START_S)
    src.start().wait_ready(START_S)
    dst.wait_for(
        lambda: dst.counter("feed", "ticks_out") > 3000, what="mirrored ticks", timeout=START_S
    )
    mine, theirs = ring_records(dst), ring_records(src)
    common = np.intersect1d(mine["seq"], theirs["seq"])
    assert len(common) > 2000
    a = mine[np.isin(mine["seq"], common)]
    b = theirs[np.isin(theirs["seq"], common)]
    assert a.tobytes() == b.tobytes()  # every field, the source's times included
    # Nothing mirrored that the bridge did not publish (it counts a run once the stream
    # acknowledged it, which may be after the mirror wrote it: mirrored first, then wait).
    mirrored = dst.counter("feed", "ticks_out")
    src.wait_for(lambda: src.counter("bridge", "ticks_in") >= mirrored, what="bridge count")
    for app, name in ((src, "bridge"), (dst, "feed"), (src, "bridge")):
        before = dst.counter("feed", "ticks_out")
        dst.wait_for(
            lambda b=before: dst.counter("feed", "ticks_out") > b + 500,
            what="ticks",
            timeout=START_S,
        )
        inc = app.workers()[name]["incarnation"]
        app.kill(name)
        app.wait_restarted(name, inc + 1, START_S)
    after = dst.counter("feed", "ticks_out")
    dst.wait_for(
        lambda: dst.counter("feed", "ticks_out") > after + 500, what="ticks resume", timeout=START_S
    )
    mine = ring_records(dst)
    continuous(mine)
    assert (mine["kind"] != TickKind.GAP).all(), "a restart lost ticks"
    assert dst.counter("feed", "feed_gaps") == 0
    assert dst.stop() == 0 and src.stop() == 0


def test_a_subscriber_behind_the_retention_flags_the_exact_gap(pair):
    # A stream that keeps about two seconds of ticks; the mirror's feed is frozen for
    # longer (less than its heartbeat timeout, so it is not restarted).
    src, dst = pair(rate=4000)
    for app in (src, dst):
        text = app.config.read_text().replace(
            "[cluster.ticks]\n", "[cluster.ticks]\nmax_bytes = 524288\n", 1
        )
        # The mirror's ring keeps the whole run, so every gap it flagged can be read back.
        text = text.replace("ring_capacity = 16384", "ring_capacity = 262144")
        app.config.write_text(text.replace("max_bytes = 67108864\n", "", 1))
    dst.start().wait_ready(START_S)
    src.start().wait_ready(START_S)
    dst.wait_for(
        lambda: dst.counter("feed", "ticks_out") > 2000, what="mirrored ticks", timeout=START_S
    )
    pid = dst.workers()["feed"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    time.sleep(6.0)
    os.kill(pid, signal.SIGCONT)
    dst.wait_for(lambda: dst.counter("feed", "feed_gaps") >= 1, what="GAP ticks", timeout=START_S)
    before = dst.counter("feed", "ticks_out")
    dst.wait_for(
        lambda: dst.counter("feed", "ticks_out") > before + 500,
        what="ticks resume",
        timeout=START_S,
    )
    mine = ring_records(dst)
    gaps = continuous(mine)  # (first missing seq, how many) of every gap in the ring
    assert dst.workers()["feed"]["incarnation"] == 1
    # The freeze made one gap; a source bridge lapped on a busy machine may add others.
    # Each is one GAP tick per symbol, and their sizes add up to the feed's count.
    assert len(gaps) >= 1 and dst.counter("feed", "feed_gaps") == 2 * len(gaps)
    assert sum(n for _, n in gaps) == dst.counter("feed", "net_missing")
    assert all(n > 0 for _, n in gaps)
    assert dst.stop() == 0 and src.stop() == 0
