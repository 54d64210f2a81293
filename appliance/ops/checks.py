"""`check-config` warnings: configs that are valid but cannot trade, and the journal.

A config can pass every rule and still never trade: an agent's order is worth more than
the symbol's max_order_notional (every order is rejected), its quantity is below one lot
(every order is BAD_ORDER), or trading starts halted. These are warnings, not errors: the
appliance runs, it just does nothing useful, which an operator should hear before starting
it rather than after.

Order sizes are read from a population's ``qty`` param (a number, or one per symbol), the
convention of the shipped kinds; kinds without one are not checked.
"""

from __future__ import annotations

from pathlib import Path

from appliance.agents import POPULATIONS
from appliance.config import Config, SymbolConfig
from appliance.model.enums import TradingState
from appliance.storage.sqlite import damage
from appliance.trading.journal import Journal, JournalError
from appliance.trading.layout_check import journal_problems


def cannot_trade(config: Config) -> list[tuple[str, str]]:
    """(location, warning) pairs for what keeps a valid config from trading."""
    out: list[tuple[str, str]] = []
    state = config.trading.state
    if state is not TradingState.ACTIVE:
        sent = "no order is" if state is TradingState.HALTED else "only orders that reduce are"
        out.append(("trading.state", f"{state.value!r}: {sent} sent until a reload sets it to "
                    "'active'"))  # fmt: skip
    for h, host in enumerate(config.hosts):
        for p, pop in enumerate(host.populations):
            loc = f"hosts[{h}].populations[{p}].params"
            params = POPULATIONS[pop.kind].validate_params(
                pop.params, len(config.population_symbols(h, p))
            )
            qty = getattr(params, "qty", None)
            if qty is None:
                continue
            symbols = [config.symbols[s] for s in config.population_symbols(h, p)]
            qtys = qty if isinstance(qty, list) else [qty] * len(symbols)
            for i, (sym, q) in enumerate(zip(symbols, qtys, strict=True)):
                where = f"{loc}.qty[{i}]" if isinstance(qty, list) else f"{loc}.qty"
                out += [(where, w) for w in _order_warnings(sym, float(q))]
    return out


def _order_warnings(sym: SymbolConfig, qty: float) -> list[str]:
    out = []
    if qty < sym.lot_size * (1 - 1e-9):
        out.append(
            f"{qty:g} {sym.name} is below one lot ({sym.lot_size:g}): every order is rejected "
            "as BAD_ORDER"
        )
    notional = qty * sym.start_price
    if notional > sym.max_order_notional:
        out.append(
            f"an order of {qty:g} {sym.name} is worth about {notional:,.2f} at start_price "
            f"{sym.start_price:g}, above max_order_notional {sym.max_order_notional:g}: every "
            "order is rejected (MAX_NOTIONAL); raise the limit or lower qty"
        )
    return out


def journal_conflicts(config: Config, journal: Path) -> list[str]:
    """What in ``config`` contradicts positions open in ``journal`` (a start would refuse);
    none for no journal yet. JournalError when the file is damaged (SQLite's quick_check:
    a start would read it, or fail on it later) or is no dynamind journal."""
    if not journal.exists():
        return []
    j = Journal(journal, readonly=True)
    try:
        if why := damage(j.connection):
            raise JournalError(f"{journal}: damaged journal ({why})")
        universe = config.universe()
        return journal_problems(
            j, universe.symbols, universe.lots.tolist(), universe.agents.counts
        )
    finally:
        j.close()
