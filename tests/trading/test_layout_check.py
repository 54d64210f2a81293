"""Layout checks: which configured layouts contradict the positions a journal holds."""

from appliance.trading.journal import Journal
from appliance.trading.layout_check import LayoutMismatch, journal_problems, layout_problems


def test_layout_problems(tmp_path, intent, fill):
    def held(agent: int, symbol: int, lots: int, seq: int = 0, population: int = 0) -> None:
        o = intent(j, seq, agent=agent, lots=abs(lots), side=1 if lots > 0 else -1,
                   population=population, symbol=symbol)  # fmt: skip
        j.write(new_intents=[o], fills=[fill(o, abs(lots))])

    path = tmp_path / "j.sqlite"
    syms, lots, agents = ["A", "B", "C"], [0.1, 0.1, 0.1], {(0, 0): 4, (0, 1): 2}
    assert layout_problems(path, syms, lots, agents) == []  # no journal yet
    j = Journal(path, synchronous="NORMAL")
    j.begin_run(symbols=syms, lots=lots, agents=agents)
    assert journal_problems(j, ["X"], [1.0], {}) == []  # nothing held: anything goes
    held(agent=3, symbol=1, lots=5)  # agent 3 of (0, 0) long B
    held(agent=1, symbol=2, lots=2, seq=1, population=1)  # agent 1 of (0, 1) long C
    held(agent=0, symbol=0, lots=2, seq=2)
    held(agent=0, symbol=0, lots=-2, seq=3)  # A: flat again
    assert j.last_layout() == {"symbols": syms, "lots": lots, "agents": [[0, 0, 4], [0, 1, 2]]}
    assert [tuple(p) for p in j.reads.open_positions()] == [
        (0, 0, 3, 1, 0.1, 5),
        (0, 1, 1, 2, 0.1, 2),
    ]
    ok = [
        (syms, lots, agents),
        (["Z", "B", "C"], [9.0, 0.1, 0.1], agents),  # flat A replaced, its lot changed
        ([*syms, "D"], [*lots, 1.0], {(0, 0): 4, (0, 1): 2, (1, 0): 9}),  # appended
        (syms, lots, {(0, 0): 4, (0, 1): 2}),
        (syms, lots, None),  # agents not checked
    ]
    for s, lt, ag in ok:
        assert journal_problems(j, s, lt, ag) == [], (s, lt, ag)
    (p,) = journal_problems(j, syms, [0.1, 0.01, 0.1], agents)
    assert "symbol B (index 1): lot size 0.1 -> 0.01" in p and "agent 3" in p
    b, c = journal_problems(j, ["A", "C", "B"], lots, agents)
    assert b.startswith("symbol B (index 1) is now index 2 (index 1 is now C)")
    assert c.startswith("symbol C (index 2) is now index 1 (index 2 is now B)")
    problems = journal_problems(j, ["A", "B"], [0.1, 0.1], agents)
    assert problems == [
        "symbol C (index 2) is no longer configured: positions open (1 agent(s), e.g. host 0 "
        "population 1 agent 1)"
    ]
    (p,) = journal_problems(j, syms, lots, {(0, 0): 3, (0, 1): 2})
    assert p.startswith("host 0 population 0 now has 3 agents (was 4)") and "agent 3" in p
    (p,) = journal_problems(j, syms, lots, {(0, 0): 4})
    assert p.startswith("host 0 population 1 no longer exists (was 2)")
    # the check by path (for the supervisor) opens read-only, alongside the writer
    assert layout_problems(path, ["A", "C", "B"], lots, agents) == journal_problems(
        j, ["A", "C", "B"], lots, agents
    )
    assert "symbol B" in str(LayoutMismatch(path, [p, "symbol B"]))
    j.close()
