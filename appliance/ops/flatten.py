"""`dynamind flatten`: close every position of a running appliance, and wait until flat.

The request goes to execution over its trading desk (runtime/desk.py), which journals
the operator's user as the kernel names it: execution goes reduce-only (only orders that
shrink a position pass; resting orders are cancelled) and sends a closing order for every
open position through its own risk checks, netting and journal (trading/flatten.py),
again each status interval for what the market did not fill. The hosts reload their
agents' positions from execution. This command watches the positions execution
publishes for each host until none is left open.

Trading stays reduce-only afterwards (the board says why); a reload that changes
trading.state, or a restart, ends it.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from appliance.model.records import POSITION
from appliance.ops.monitor import Monitor, trading_text
from appliance.ops.trading_cmd import ask
from appliance.runtime import layout
from appliance.runtime.desk import FLATTEN
from appliance.runtime.exits import Exit
from appliance.shm.snapshot import SharedSnapshot

PROGRESS_S = 1.0


def open_positions(monitor: Monitor) -> int:
    """Positions open over every host, as execution holds them."""
    count = 0
    for h in range(len(monitor.hosts)):
        name = layout.positions_snapshot(h)
        snap = SharedSnapshot.attach(monitor.instance, name, POSITION, read_only=True)
        try:
            data, _, _ = snap.read()
        finally:
            snap.close()
        count += int((np.abs(data) > 1e-12).sum())
    return count


def run(monitor: Monitor, desk: Path, timeout: float) -> int:
    """Flatten through the trading desk ``desk`` (see trading_cmd.ask), then watch."""
    sample = monitor.sample()
    if not sample.running:
        print(sample.banner, file=sys.stderr)
        return Exit.NOT_RUNNING
    print(f"{open_positions(monitor):,} positions open; asking execution to flatten")
    reply, code = ask(desk, FLATTEN, "", timeout)
    if code != Exit.OK:
        return code
    print(f"trading {reply['state']} (was {reply['was']}): {reply['why']}")
    deadline = time.monotonic() + timeout
    next_note = 0.0
    while True:
        sample = monitor.sample()
        if not sample.running:
            print("the appliance stopped while flattening", file=sys.stderr)
            return Exit.NOT_RUNNING
        count = open_positions(monitor)
        state = sample.board.get("trading")
        if count == 0 and state == "reduce_only":
            print(f"flat: every position is closed; trading {trading_text(sample.board)}")
            return Exit.OK
        now = time.monotonic()
        if now > deadline:
            print(
                f"still {count:,} positions open after {timeout:g}s (trading {state}); the "
                "agents keep trying: see `dynamind status` and the log for rejects",
                file=sys.stderr,
            )
            return Exit.ERROR
        if now >= next_note:
            next_note = now + PROGRESS_S
            print(f"  {count:,} positions open, trading {state}")
        time.sleep(0.1)
