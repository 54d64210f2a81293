"""`dynamind exchange-sim`: run the loopback exchange until Ctrl-C or SIGTERM.

Its API key pair comes from DYNAMIND_SIM_API_KEY / DYNAMIND_SIM_SECRET (defaults below,
which the example live-sim config's credentials file also holds): never from the command
line, where other users could read it in the process list.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from appliance.exsim import HOST, CaptureError, ExchangeSim, bound_port, load_capture, serve

log = logging.getLogger("dynamind.exchange-sim")

DEFAULT_KEY = "dynamind-sim-key"
DEFAULT_SECRET = "dynamind-sim-secret"


def run(args: argparse.Namespace) -> int:
    logging.getLogger("appliance.exsim").setLevel(logging.INFO)
    log.setLevel(logging.INFO)
    try:
        capture = load_capture(args.data)
    except CaptureError as exc:
        print(f"exchange-sim: {exc}", file=sys.stderr)
        return 2
    sim = ExchangeSim(
        capture,
        api_key=os.environ.get("DYNAMIND_SIM_API_KEY", DEFAULT_KEY),
        api_secret=os.environ.get("DYNAMIND_SIM_SECRET", DEFAULT_SECRET),
        pace=args.pace,
        loop=not args.once,
        start_delay_s=args.start_delay,
        speed=args.speed,
    )
    try:
        asyncio.run(_serve(sim, args.port))
    except OSError as exc:
        print(f"exchange-sim: cannot listen on {HOST}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    return 0


async def _serve(sim: ExchangeSim, port: int) -> None:
    runner = await serve(sim, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    base = f"{HOST}:{bound_port(runner)}"
    # The line tests and users wait for: where to point a config.
    print(f"exchange-sim listening on http://{base} (ws://{base}/ws)", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
