"""The restart policy of one process: exponential backoff and the restart-intensity limit."""

from __future__ import annotations

from appliance.config import SupervisorConfig
from appliance.runtime.children import STABLE_S, RestartPolicy

LIMITS = SupervisorConfig(
    restart_backoff_initial_s=0.5,
    restart_backoff_max_s=3.0,
    max_restarts=4,
    restart_window_s=60.0,
)


def test_backoff_doubles_up_to_its_max_and_resets_after_a_stable_run():
    policy = RestartPolicy()
    delays = [policy.delay(LIMITS, now=t, up_for=1.0) for t in (0.0, 1.0, 2.0, 3.0)]
    assert delays == [0.5, 1.0, 2.0, 3.0]
    assert policy.delay(LIMITS, now=100.0, up_for=STABLE_S + 1) == 0.5


def test_more_restarts_than_the_limit_within_the_window_is_none():
    policy = RestartPolicy()
    for t in range(4):
        assert policy.delay(LIMITS, now=float(t), up_for=1.0) is not None
    assert policy.delay(LIMITS, now=4.0, up_for=1.0) is None


def test_restarts_leave_the_window():
    policy = RestartPolicy()
    for t in (0.0, 1.0, 2.0, 3.0):
        policy.delay(LIMITS, now=t, up_for=1.0)
    # the first two left the window: three restarts within it, under the limit
    assert policy.delay(LIMITS, now=61.5, up_for=1.0) is not None
    assert len(policy.recent) == 3
