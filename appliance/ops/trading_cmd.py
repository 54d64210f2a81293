"""`dynamind trading halt|reduce-only|resume`: the operator sets the trading state.

The request goes to the execution process over its trading desk (runtime/desk.py), which
journals the change with the operator's user (as the kernel names it) and the reason,
cancels resting orders when trading halts or goes reduce-only, and answers. The command
then waits until the board (what `dynamind status` and `top` show) says the same.

Only the appliance's own desk is asked: one in a directory someone else could have made,
or answered by a process that is not the directory's owner, is refused before anything
is sent (exit 16, as for a squatted segment name), and its answer is never an outcome.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import posix_ipc

from appliance.runtime.board import Board
from appliance.runtime.desk import DeskError, NotListening, NotPermitted, request
from appliance.runtime.exits import Exit
from appliance.shm import SegmentError

#: command word -> TradingState value
STATES = {"halt": "halted", "reduce-only": "reduce_only", "resume": "active"}


def ask(desk: Path, state: str, reason: str, timeout: float) -> tuple[dict[str, Any], int]:
    """Execution's answer to an operator's request at the trading desk ``desk``, and
    Exit.OK; or, said on stderr why there is none (or it refused), an empty answer and the
    exit code."""
    try:
        reply = request(desk, state, reason, timeout)
    except NotListening as exc:
        print(f"{exc}: is the appliance running (is execution restarting)?", file=sys.stderr)
        return {}, Exit.NOT_RUNNING
    except NotPermitted as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return {}, Exit.ERROR
    except DeskError as exc:  # not the appliance's desk: whatever it would say is not ours
        print(f"not asking: {exc}", file=sys.stderr)
        return {}, Exit.SHM_NAME_TAKEN
    except TimeoutError:
        print(f"no answer from execution within {timeout:g}s", file=sys.stderr)
        return {}, Exit.ERROR
    if not reply.get("ok"):
        print(f"refused: {reply.get('error')}", file=sys.stderr)
        return {}, Exit.ERROR
    return reply, Exit.OK


def run(instance: str, desk: Path, action: str, reason: str, timeout: float) -> int:
    state = STATES[action]
    reply, code = ask(desk, state, reason, timeout)
    if code != Exit.OK:
        return code
    print(f"trading {reply['state']} (was {reply['was']}): {reply['why']}")
    if not _board_shows(instance, state, timeout):
        print("(the board has not caught up yet: see `dynamind status`)", file=sys.stderr)
    return Exit.OK


def _board_shows(instance: str, state: str, timeout: float) -> bool:
    try:
        board = Board.attach(instance)
    except (SegmentError, posix_ipc.PermissionsError):
        return False
    try:
        deadline = time.monotonic() + timeout
        while board.read()["trading"] != state:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True
    finally:
        board.close()
