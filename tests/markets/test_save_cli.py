"""`dynamind markets save` when the exchange cannot be reached: one line, its own exit code."""

from __future__ import annotations

import json
import socket

from appliance.exsim.server import client_urls
from appliance.runtime.exits import Exit
from tests.harness import dynamind


def test_an_unreachable_exchange_is_a_clear_error_not_a_bug(tmp_path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "markets.json"
    res = dynamind(
        "markets", "save", "binanceus", str(out), "--urls", json.dumps(client_urls(port))
    )
    assert res.returncode == Exit.UNAVAILABLE, res.stderr
    (line,) = res.stderr.splitlines()
    assert line.startswith("markets save: binanceus: ") and f"127.0.0.1:{port}" in line, line
    assert not out.exists()


def test_a_file_that_cannot_be_written_is_a_usage_error(tmp_path, make_sim) -> None:
    sim = make_sim()
    out = tmp_path / "missing" / "markets.json"
    res = dynamind(
        "markets", "save", "binanceus", str(out), "--urls", json.dumps(client_urls(sim.port))
    )
    assert res.returncode == Exit.USAGE, res.stderr
    assert res.stderr.startswith(f"markets save: {out}: "), res.stderr
