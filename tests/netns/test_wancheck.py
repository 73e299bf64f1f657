"""The WAN check's statistics, on synthetic samples: noise passes, a systematic error fails."""

import random

from ipsecrtp.netns.wancheck import check_delay, check_rtt


def test_one_late_probe_is_noise_not_an_error():
    # the case that failed the old every-sample check: one probe at 11.6 ms for a 10 ms setting
    samples = [10.1] * 29 + [11.6]
    v = check_delay(samples, 10.0)
    assert v.ok and abs(v.max_error_ms - 1.6) < 1e-9 and "max error 1.600 ms" in str(v)
    assert check_delay([10.1] * 27 + [25.0, 40.0, 13.0], 10.0).ok  # up to 10 % far off: still noise


def test_a_systematic_error_of_2ms_fails_on_the_median():
    rng = random.Random(1)
    samples = [12.1 + rng.uniform(-0.05, 0.05) for _ in range(30)]
    v = check_delay(samples, 10.0)
    assert not v.ok and v.reason.startswith("median off by +2.")
    assert not check_delay([7.9] * 30, 10.0).ok  # too short is as wrong as too long


def test_frequent_outliers_fail_on_the_p90():
    v = check_delay([10.1] * 24 + [13.5] * 6, 10.0)  # one in five more than 2 ms off
    assert not v.ok and "p90 error 3.500 ms" in v.reason and "median" not in v.reason


def test_no_samples_is_a_failure():
    assert not check_delay([], 10.0).ok


def test_a_round_trip_tolerates_twice_the_spread_but_not_a_shifted_median():
    # the CI failure of 2026-12-02: 10 pings at 300 ms, in whole ms, two of them 3 and 5 ms late
    pings = [300.0] * 8 + [303.0, 305.0]
    assert not check_delay(pings, 300.0).ok and check_rtt(pings, 300.0).ok
    assert not check_rtt([304.0] * 20, 300.0).ok  # 2 ms extra each way: the median fails
    assert not check_rtt([300.0] * 16 + [306.0] * 4, 300.0).ok  # one in five 6 ms late
