"""What the supervisor logs of its workers' messages."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from appliance.runtime.inbox import Inbox
from appliance.runtime.messages import Final


def test_final_positions_are_logged_without_float_noise(caplog):
    qty = 0.57 * 0.001  # 0.0005700000000000001: how lots * lot comes out
    final = Final(positions=[(0, 0, 1, 0, qty), (1, 0, 2, 1, -0.036000000000000004)],
                  journal_matches=True, reported_matches=True)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="appliance.runtime.inbox"):
        Inbox().handle(SimpleNamespace(name="execution"), final)
    (record,) = [r for r in caplog.records if r.msg.startswith("final positions")]
    assert record.positions == [(0, 0, 1, 0, 0.00057), (1, 0, 2, 1, -0.036)]
