"""Does a configured layout fit the positions a journal holds open?

Fills are keyed by symbol index and (host, population, agent) and carry their lot, so an
open position breaks if its index now names another symbol (reordered, removed), its lot
size changed, or its agent no longer exists. Starting anyway would replay fills onto other
symbols or agents, or crash the portfolio after the journal committed (a crash loop): the
execution engine and the supervisor refuse with the problems this module words.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from appliance.trading import checkpoint
from appliance.trading.journal import Journal
from appliance.trading.recovery_reads import OpenPosition

Agents = Mapping[tuple[int, int], int]  # agent count per (host, population)


class LayoutMismatch(RuntimeError):
    """The configured instrument table or agent layout contradicts positions the journal
    holds open: starting would misattribute them or crash on them."""

    def __init__(self, path: str | os.PathLike[str], problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{path}: the configuration does not fit the positions open in the journal "
            "(restore the old symbols/agents, or flatten those positions first):\n  "
            + "\n  ".join(self.problems)
        )


def layout_problems(
    path: str | os.PathLike[str],
    symbols: Sequence[str],
    lots: Sequence[float],
    agents: Agents | None = None,
) -> list[str]:
    """``journal_problems`` of the journal at ``path``, opened read-only (callable before
    anything starts); no file yet is a fresh journal: no problems."""
    if not Path(path).exists():
        return []
    j = Journal(path, readonly=True)
    try:
        return journal_problems(j, symbols, lots, agents)
    finally:
        j.close()


def journal_problems(
    journal: Journal,
    symbols: Sequence[str],
    lots: Sequence[float],
    agents: Agents | None = None,
) -> list[str]:
    """What in a new layout contradicts the positions still open in ``journal``, one line
    each; empty: compatible (a fresh journal, or changes that touch only flat symbols and
    agents). Symbol names are compared with the latest recorded layout (runs from before
    layouts were recorded: lots and agents only). ``agents`` None: agents not checked."""
    old = journal.last_layout() or {}
    held = checkpoint.open_positions(journal)
    problems = _symbol_problems(held, old.get("symbols") or [], symbols, lots)
    if agents is not None:
        old_agents = {(h, p): n for h, p, n in old.get("agents") or []}
        problems += _agent_problems(held, old_agents, agents)
    return problems


def _symbol_problems(
    held: list[OpenPosition], old_syms: Sequence[str], symbols: Sequence[str], lots: Sequence[float]
) -> list[str]:
    by_symbol: dict[int, dict[float, list[OpenPosition]]] = {}
    for p in held:
        by_symbol.setdefault(p.symbol, {}).setdefault(p.lot, []).append(p)
    problems = []
    for s, by_lot in sorted(by_symbol.items()):
        who = [p for ps in by_lot.values() for p in ps]
        ex = f"positions open ({len(who)} agent(s), e.g. host {who[0].host} population "
        ex += f"{who[0].population} agent {who[0].agent})"
        was = old_syms[s] if s < len(old_syms) else None
        now = symbols[s] if s < len(symbols) else None
        if was is not None and was != now:
            where = (
                f"is now index {list(symbols).index(was)}"
                if was in symbols
                else "is no longer configured"
            )
            instead = f" (index {s} is now {now})" if now is not None else ""
            problems.append(f"symbol {was} (index {s}) {where}{instead}: {ex}")
        elif now is None:
            problems.append(
                f"symbol index {s} is no longer configured ({len(symbols)} symbols): {ex}"
            )
        else:
            for lot in sorted(by_lot):
                if lot != float(lots[s]):  # exact, as Portfolio compares
                    problems.append(
                        f"symbol {now} (index {s}): lot size {lot:g} -> {float(lots[s]):g} "
                        f"with {ex}"
                    )
    return problems


def _agent_problems(held: list[OpenPosition], old_agents: Agents, agents: Agents) -> list[str]:
    by_pop: dict[tuple[int, int], set[int]] = {}
    for p in held:
        by_pop.setdefault((p.host, p.population), set()).add(p.agent)
    problems = []
    for (h, p), held_by in sorted(by_pop.items()):
        n = agents.get((h, p), 0)
        gone = sorted(a for a in held_by if a >= n)
        if not gone:
            continue
        was_n = old_agents.get((h, p))
        was_txt = f" (was {was_n})" if was_n is not None else ""
        now_txt = f"now has {n} agents" if n else "no longer exists"
        problems.append(
            f"host {h} population {p} {now_txt}{was_txt}: {len(gone)} agent(s) beyond "
            f"it hold positions, e.g. agent {gone[0]}"
        )
    return problems
