"""The control plane's channel hands over every queued message (up to the limit)."""

from appliance.runtime.control import Channel


def test_receive_takes_everything_queued_not_one_read_buffer():
    c = Channel()
    for i in range(40):  # status lines of a few hundred bytes, as execution sends them
        assert c.send("status", i=i, pad="x" * 800)
    c.send("final", positions=[[0, 0, i, 0, 0.002] for i in range(120)])
    got = c.receive()
    assert [m["kind"] for m in got] == ["status"] * 40 + ["final"]
    assert [m["i"] for m in got[:40]] == list(range(40))
    assert c.receive() == []
    for i in range(5):
        c.send("status", i=i)
    assert [m["i"] for m in c.receive(limit=3)] == [0, 1, 2]
    assert [m["i"] for m in c.receive()] == [3, 4]
