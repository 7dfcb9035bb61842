"""Tests for tf_biggan.monitor: the collapse watch on spectral norms and D's logit gap."""

import numpy as np
import pytest

from tf_biggan import monitor


def test_collapse_monitor_flags_a_sudden_jump_but_not_smooth_growth_or_noise():
    rng = np.random.default_rng(0)
    watch = monitor.CollapseMonitor(sigma_ratio=3.0, window=10, min_history=5)
    alarms = []
    for step in range(60):
        sigmas = {
            # Smooth exponential growth: 5 % per summary, 18x over the run.
            "sigma/G/linear": 1.0 * 1.05**step,
            # Noise of +-30 % around 2.
            "sigma/D/block0/conv1": 2.0 * (1.0 + 0.3 * rng.uniform(-1.0, 1.0)),
            # Steady at 1.5, then a 4x blow-up at step 40 that persists.
            "sigma/G/block1/conv2": 1.5 if step < 40 else 6.0,
        }
        alarms += watch.update(step, sigmas)
    flagged = {(a.step, a.name) for a in alarms}
    # The jump is flagged at once and while the median still remembers the old level
    # (median of 10 values flips after 5 new ones).
    assert flagged == {(s, "sigma/G/block1/conv2") for s in range(40, 45)}
    first = alarms[0]
    assert first.kind == "sigma" and first.value == 6.0 and first.reference == 1.5
    assert "step 40" in str(first) and "4.00x" in str(first)


def test_collapse_monitor_needs_history_and_checks_the_gap():
    watch = monitor.CollapseMonitor(sigma_ratio=2.0, window=4, min_history=3, gap_threshold=5.0)
    assert watch.update(0, {"s": 1.0}) == []
    assert watch.update(1, {"s": 10.0}) == []  # only one value of history so far
    assert watch.update(2, {"s": 1.0}, d_real=3.0, d_fake=-1.0) == []  # gap 4 <= 5
    (alarm,) = watch.update(3, {"s": 1.0}, d_real=4.0, d_fake=-2.5)
    assert alarm.kind == "gap" and alarm.value == 6.5
    # History [1, 10, 1, 1]: median 1, so 2.5 is flagged; after reset it is not.
    assert [a.value for a in watch.update(4, {"s": 2.5})] == [2.5]
    watch.reset()
    assert watch.update(5, {"s": 100.0}) == []
    with pytest.raises(ValueError):
        monitor.CollapseMonitor(sigma_ratio=1.0)
    with pytest.raises(ValueError):
        monitor.CollapseMonitor(window=3, min_history=4)
