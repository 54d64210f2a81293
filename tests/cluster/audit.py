"""The journal audit across instances: every intent published on any host journaled exactly
once, and positions equal to fills on every host.

"Published" for a host of an agents instance means stored in the intents stream: that is
where the intent leaves its instance for good (what a SIGKILLed instance still held in its
own queues died with it, as it does on one host). Each run in the stream names its
intents by (instance, epoch, queue position); the audit checks that every lifetime's runs
cover its positions from 0 without a hole or an overlap (up to the queue head its clean
stop reported), and that the journal holds each intent of every run, by exec id, once.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest
from nats.js import api

from appliance.cluster.order_wire import exec_ids
from appliance.cluster.wire import COUNT, EPOCH, SEQ, SOURCE
from tests.harness import Appliance, final_report, journal_positions


async def _runs(urls: list[str], stream: str, subject: str) -> list[tuple[int, dict]]:
    nc = await nats.connect(urls, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=10)
        info = await js.stream_info(stream)
        out: list[tuple[int, dict]] = []
        if info.state.messages == 0:
            return out
        sub = await js.subscribe(
            subject,
            stream=stream,
            ordered_consumer=True,
            headers_only=True,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL),
        )
        try:
            while True:
                try:
                    msg = await sub.next_msg(2.0)
                except nats.errors.TimeoutError:
                    return out
                out.append((msg.metadata.sequence.stream, dict(msg.headers or {})))
                if msg.metadata.num_pending == 0:
                    return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def stream_intents(urls: list[str], stream: str, subject: str) -> list[tuple[int, dict]]:
    """(stream sequence, headers) of every intent run stored on ``subject``."""
    return asyncio.run(_runs(urls, stream, subject))


def uplink_finals(app: Appliance) -> list[dict]:
    """The uplink's final report of every clean stop in the instance's log."""
    return [line for line in app.log_lines() if line["msg"].startswith("uplink final positions")]


def audit_remote_host(
    exec_app: Appliance, agents: Appliance, host: int, urls: list[str], stream: str, subject: str
) -> int:
    """Check host ``host`` (run by ``agents``, executed by ``exec_app``); its intent count."""
    runs = stream_intents(urls, stream, subject)
    by_life: dict[tuple[str, str], list[tuple[int, int]]] = {}
    expected: list[int] = []
    for seq, h in runs:
        first, n = int(h[SEQ]), int(h[COUNT])
        by_life.setdefault((h[SOURCE], h[EPOCH]), []).append((first, n))
        expected += exec_ids(seq, n).tolist()
    for life, spans in by_life.items():
        pos = 0
        for first, n in spans:
            assert first == pos, f"{life}: stream holds queue positions from {first}, not {pos}"
            pos = first + n
    finals = uplink_finals(agents)
    assert finals, "the agents instance never stopped cleanly:\n" + agents.log_tail()
    last = finals[-1]
    assert "NOT settled" not in last["msg"], last["msg"]
    head = int(last["heads"][str(host)])
    life = (agents.instance, str(last["epoch"]))
    if head:
        spans = by_life[life]
        assert spans[-1][0] + spans[-1][1] == head, f"{life}: published {head}, stream {spans[-1]}"
    with exec_app.journal() as db:
        seqs = [
            s
            for (s,) in db.execute(
                "SELECT intent_seq FROM orders WHERE host = ? ORDER BY intent_seq", (host,)
            )
        ]
    assert len(seqs) == len(set(seqs)), f"host {host}: an intent journaled twice"
    missing = sorted(set(expected) - set(seqs))
    extra = sorted(set(seqs) - set(expected))
    assert not missing and not extra, f"host {host}: missing {missing[:5]}, extra {extra[:5]}"
    # positions the agents instance ended with = positions recomputed from the fills
    fills = {k: v for k, v in journal_positions(exec_app).items() if k[0] == host and v}
    held = {tuple(p[:4]): p[4] for p in last["positions"]}
    assert set(held) == set(fills), f"host {host}: positions differ in which agents hold any"
    for key, qty in held.items():
        assert qty == pytest.approx(fills[key], abs=1e-9), key
    return len(expected)


def audit_local_hosts(exec_app: Appliance, hosts: list[int]) -> None:
    """Local hosts of the execution instance: queue positions journaled once each, up to
    the heads the last clean stop drained (earlier lifetimes: from 0, no hole)."""
    with exec_app.journal() as db:
        (drained,) = db.execute(
            "SELECT drained FROM runs WHERE drained IS NOT NULL ORDER BY run_id DESC LIMIT 1"
        ).fetchone()
        (last_epoch,) = db.execute("SELECT epoch FROM runs ORDER BY run_id DESC LIMIT 1").fetchone()
        heads = {int(h): n for h, n in json.loads(drained).items()}
        for host in hosts:
            rows = db.execute(
                "SELECT epoch, intent_seq FROM orders WHERE host = ? ORDER BY epoch, intent_seq",
                (host,),
            ).fetchall()
            by_epoch: dict[str, list[int]] = {}
            for epoch, seq in rows:
                by_epoch.setdefault(epoch, []).append(seq)
            for epoch, seqs in by_epoch.items():
                want = heads[host] if epoch == last_epoch else len(seqs)
                assert seqs == list(range(want)), f"host {host} epoch {epoch}: not 0..{want - 1}"
    final = final_report(exec_app)
    assert "DIFFERS" not in final["msg"], final["msg"]


def assert_host_checks(app: Appliance, hosts: list[str]) -> None:
    """Every host that stopped cleanly found its agents where execution has them."""
    lines = [line["msg"] for line in app.log_lines() if "positions check" in line["msg"]]
    assert "DIFFER" not in " ".join(lines), lines
    for host in hosts:
        mine = [m for m in lines if m.startswith(f"{host} positions check")]
        assert mine, f"{host} made no positions check:\n{app.log_tail()}"
        assert "did not settle" not in mine[-1] and " 0 settled" not in mine[-1], mine[-1]


def assert_views_agreed(agents: Appliance) -> None:
    """The uplink never found its positions differing from a checkpoint of execution's, nor
    a report missing: what crossed the network was applied exactly once."""
    bad = [
        line["msg"]
        for line in agents.log_lines()
        if line.get("process") == "uplink"
        and line["level"] == "ERROR"
        and line["logger"].startswith("appliance.")
    ]
    assert not bad, bad
