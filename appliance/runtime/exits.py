"""Exit codes of `dynamind`: one per meaning, shared by the CLI and the supervisor.

Where systemd already has a name for a code that says the same thing (it prints
``status=78/CONFIG`` in ``systemctl status``), that code is used; the appliance's own
meanings take 10-16, which systemd shows as a bare number. 1 stays "unexpected error"
(an uncaught exception) and 2 stays argparse's "bad command line".

The unit's ``RestartPreventExitStatus=`` lists the codes that mean "a person must look":
restarting would only fail the same way again (see ``NEEDS_A_PERSON``).
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    ERROR = 1  # an unexpected error (a traceback in the log: a bug to report)
    USAGE = 2  # the command line is wrong (argparse)
    HALTED = 10  # restart-intensity limit: a worker kept failing, the appliance stopped
    UNDRAINED = 11  # stopped, but published intents could not be journaled first: they
    # stay queued in shared memory, and the next start journals them as stale
    ALREADY_RUNNING = 12  # an appliance of the same instance name is running
    NOT_RUNNING = 13  # status/top/flatten: no appliance of that instance is running
    NO_SHM_SPACE = 14  # /dev/shm cannot hold the config's segments: nothing started
    START_FAILED = 15  # a worker failed before it was ever ready (its cause is printed):
    # everything started was stopped; or the journal's disk is full at a start that must
    # first journal what the last run left queued. Not a person's case by itself: the
    # cause may pass (an exchange unreachable at boot, space freed); systemd's start limit
    # catches one that does not.
    SHM_NAME_TAKEN = 16  # a segment name, or the trading desk's directory, is taken by a
    # file that is not one of ours (another user's, a directory, foreign data, a symlink):
    # nothing started, nothing removed. Also `trading`/`flatten` finding a desk that is
    # not the appliance's (its answer is never taken)
    UNAVAILABLE = 69  # EX_UNAVAILABLE: the exchange could not be reached or refused
    JOURNAL_CONFLICT = 65  # EX_DATAERR: the config contradicts positions in the journal,
    # or the journal is not a usable one (damaged, not a dynamind journal): nothing was
    # started or changed
    JOURNAL_UNUSABLE = 65  # the same code, named for the commands that only read a journal
    CONFIG = 78  # EX_CONFIG: the config file is invalid, nothing started


MEANING: dict[Exit, str] = {
    Exit.OK: "clean stop (or the command succeeded)",
    Exit.ERROR: "unexpected error (see the log)",
    Exit.USAGE: "bad command line",
    Exit.HALTED: "halted by the restart-intensity limit (a worker kept failing)",
    Exit.UNDRAINED: "stopped with published intents not journaled (drain incomplete); "
    "they stay queued, and the next start journals them as stale",
    Exit.ALREADY_RUNNING: "an appliance with this instance name is already running",
    Exit.NOT_RUNNING: "no running appliance with this instance name",
    Exit.NO_SHM_SPACE: "/dev/shm has too little room for the config's segments (nothing started)",
    Exit.START_FAILED: "a worker failed while starting, before it was ready, or the journal's "
    "disk was full (the cause is printed); everything started was stopped",
    Exit.SHM_NAME_TAKEN: "a shared-memory name or the trading desk of this instance is taken by "
    "a file that is not ours (nothing started, nothing removed; trading and flatten send "
    "nothing to a desk that is not the appliance's)",
    Exit.UNAVAILABLE: "the exchange could not be reached or refused the request",
    Exit.JOURNAL_CONFLICT: "the config contradicts positions open in the journal, or the "
    "journal is damaged or not a dynamind journal (nothing started or changed)",
    Exit.CONFIG: "invalid config file (nothing started)",
}

#: Codes systemd must not restart on: the same start would fail again, or a person must
#: see what happened (the unit's RestartPreventExitStatus=). UNDRAINED is absent: it only
#: happens on a stop that was asked for, which systemd never restarts anyway.
NEEDS_A_PERSON: tuple[Exit, ...] = (
    Exit.CONFIG,
    Exit.JOURNAL_CONFLICT,
    Exit.HALTED,
    Exit.ALREADY_RUNNING,
    Exit.NO_SHM_SPACE,
    Exit.SHM_NAME_TAKEN,
)


def help_text() -> str:
    """The exit-code table for ``--help`` epilogs and the README."""
    return "exit codes:\n" + "\n".join(f"  {int(c):>3}  {MEANING[c]}" for c in Exit)
