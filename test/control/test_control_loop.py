"""ControlLoop: the fixed-period thread the policy node runs inference and streaming on."""
import threading
import time

import pytest

from retain_ros.control.control_loop import ControlLoop


def wait_for(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def test_steps_at_the_period_until_stopped():
    stamps = []
    loop = ControlLoop('test.loop', 0.02, lambda: stamps.append(time.monotonic()))
    loop.start()
    assert wait_for(lambda: len(stamps) >= 20)
    loop.stop()
    assert not loop.running
    count = len(stamps)
    time.sleep(0.1)
    assert len(stamps) == count, 'stepped after stop()'
    # absolute deadlines: the mean period matches even when single ticks are late
    mean = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    assert 0.015 <= mean <= 0.06, mean


def test_overrun_skips_missed_ticks_instead_of_bursting():
    stamps = []

    def slow():
        stamps.append(time.monotonic())
        if len(stamps) == 1:
            time.sleep(0.25)    # misses ~5 ticks of 50 ms

    loop = ControlLoop('test.overrun', 0.05, slow)
    loop.start()
    assert wait_for(lambda: len(stamps) >= 4)
    loop.stop()
    assert loop.overruns >= 3
    # after the long step the loop resumes at the period, not with back-to-back catch-up steps
    assert min(b - a for a, b in zip(stamps[1:], stamps[2:])) > 0.02


def test_errors_reported_and_loop_goes_on_or_stops():
    errors = []
    calls = []

    def bad():
        calls.append(1)
        raise RuntimeError('boom')

    loop = ControlLoop('test.errors', 0.01, bad, on_error=lambda e: errors.append(e) or True)
    loop.start()
    assert wait_for(lambda: len(errors) >= 3)
    loop.stop()
    assert all(isinstance(e, RuntimeError) for e in errors)

    stopped = threading.Event()
    loop = ControlLoop('test.stop', 0.01, bad, on_error=lambda e: stopped.set() or False)
    loop.start()
    assert stopped.wait(10.0)
    assert wait_for(lambda: not loop.running)


def test_invalid_period_and_double_start():
    with pytest.raises(ValueError, match='period'):
        ControlLoop('test.bad', 0.0, lambda: None)
    loop = ControlLoop('test.twice', 0.05, lambda: None)
    loop.start()
    try:
        with pytest.raises(RuntimeError, match='already started'):
            loop.start()
    finally:
        loop.stop()
