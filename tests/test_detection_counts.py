"""The count-spike detector on constructed series."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

import pytest

from monitor.detection.counts import (
    HOUR_SLOTS,
    Baselines,
    CountSpike,
    CountSpikeConfig,
    hour_slot,
    negbin_sf,
    poisson_sf,
)
from monitor.detection.evaluate import poisson_sample
from monitor.detection.series import Point, detect, infer_step_seconds, run_file


def daily_rhythm(hours: int, seed: int = 0, busy: float = 12.0, quiet: float = 2.0) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = []
    for h in range(hours):
        rate = busy if 13 <= h % 24 < 21 else quiet
        out.append((h % 24, poisson_sample(rng, rate)))
    return out


def test_tail_probabilities_match_known_values() -> None:
    assert poisson_sf(0, 3.0) == 1.0
    assert abs(poisson_sf(5, 2.0) - 0.052653) < 1e-5
    assert abs(negbin_sf(5, 2.0, 1e9) - poisson_sf(5, 2.0)) < 1e-6  # r → ∞ is Poisson
    assert negbin_sf(5, 2.0, 1.0) > poisson_sf(5, 2.0)  # over-dispersion fattens the tail


def test_tails_stay_exact_for_busy_keys() -> None:
    """exp(-mean) underflows past 745: poisson_sf(2000, 800) was 1.0, so a busy key never flagged."""
    assert 0 < poisson_sf(2000, 800) < 1e-200
    assert abs(poisson_sf(900, 800) - 0.000275913440907) < 1e-12  # checked with mpmath at 50 digits
    assert abs(poisson_sf(700, 800) - 0.999855949846179) < 1e-12
    assert poisson_sf(5000, 4000) < 1e-40 < poisson_sf(4100, 4000) < 0.1
    assert 0 < negbin_sf(3000, 800, 5.0) < negbin_sf(2000, 800, 5.0) < 0.01  # over-dispersed: a fatter tail
    assert abs(negbin_sf(900, 800, 1e9) - poisson_sf(900, 800)) < 1e-7
    # a long window's sum: 16 buckets of 60 expected items each, 1,400 observed
    assert poisson_sf(1400, 16 * 60) < 1e-30


def upper_sum(log_pmf, k: int, terms: int = 5000) -> float:
    """P(X >= k) summed term by term from k upwards (no 1 - cdf, so tiny tails stay exact)."""
    logs = [log_pmf(i) for i in range(k, k + terms)]
    top = max(logs)
    return math.exp(top) * sum(math.exp(x - top) for x in logs)


def test_tiny_tails_are_exact_and_match_term_by_term_sums() -> None:
    """1 - cdf floored tiny tails at about 1e-16; the incomplete gamma and beta functions do not."""
    pois = lambda m: lambda i: -m + i * math.log(m) - math.lgamma(i + 1)  # noqa: E731
    for k, m in [(50, 10.0), (12, 0.1), (1500, 1200.0), (3, 0.2)]:
        assert math.isclose(poisson_sf(k, m), upper_sum(pois(m), k), rel_tol=1e-9)
    assert poisson_sf(50, 10.0) < 1e-18

    def nb(m: float, r: float):
        p = r / (r + m)
        return lambda i: math.lgamma(i + r) - math.lgamma(r) - math.lgamma(i + 1) + r * math.log(p) + i * math.log1p(-p)

    for k, m, r in [(40, 10.0, 2.0), (4, 0.2, 2.0), (3000, 800.0, 5.0), (25_000, 20_000.0, 3.0), (60, 3.0, 50.0)]:
        assert math.isclose(negbin_sf(k, m, r), upper_sum(nb(m, r), k, 200_000), rel_tol=1e-9)


def test_no_flag_during_warm_up_even_for_a_huge_count() -> None:
    d = CountSpike(CountSpikeConfig(warmup=10))
    decisions = [d.update(c) for c in [1, 1, 1, 100, 1, 1]]
    assert not any(x.flag for x in decisions) and all(x.score == 0.0 for x in decisions)


def test_spike_and_step_are_caught() -> None:
    d = CountSpike(CountSpikeConfig(warmup=24))
    rng = random.Random(1)
    background = [d.update(poisson_sample(rng, 3.0)).flag for _ in range(100)]
    assert sum(background) <= 1
    assert d.update(20).flag  # a spike
    later = [d.update(15).flag for _ in range(3)]  # a step up is flagged at first
    assert later[0]


def test_quiet_key_with_sparse_items_does_not_alert_on_two() -> None:
    d = CountSpike()
    rng = random.Random(2)
    flags = []
    for _ in range(24 * 14):
        flags.append(d.update(poisson_sample(rng, 0.3)).flag)
    flags.append(d.update(2).flag)  # 2 negatives where 0.3 are usual: small counts stay small
    assert not any(flags)


def test_daily_rhythm_is_learned_not_alerted() -> None:
    d = CountSpike(CountSpikeConfig(seasonal_period=24, warmup=48))
    flags = [d.update(c, slot).flag for slot, c in daily_rhythm(24 * 21)]
    assert sum(flags[48:]) <= 2  # at most a couple of false alarms in three weeks of hourly buckets


def test_an_episode_does_not_raise_the_bar_for_the_next() -> None:
    d = CountSpike(CountSpikeConfig(warmup=24))
    for c in [2, 3, 2, 2, 3, 1] * 10:
        d.update(c)
    first = [d.update(25).flag for _ in range(4)]
    for c in [2, 3, 2, 2, 3, 1] * 2:
        d.update(c)
    assert first[0] and d.update(25).flag


def test_replay_gives_identical_decisions(tmp_path) -> None:
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    rows = [(start + timedelta(hours=h), c) for h, (_, c) in enumerate(daily_rhythm(24 * 10, seed=3))]
    rows[200] = (rows[200][0], 40)
    path = tmp_path / "s.csv"
    path.write_text("timestamp,value\n" + "".join(f"{t.isoformat()},{v}\n" for t, v in rows))
    out1, out2 = tmp_path / "a.csv", tmp_path / "b.csv"
    flagged = run_file(path, out1)
    run_file(path, out2)
    assert out1.read_text() == out2.read_text()
    lines = out1.read_text().splitlines()
    assert lines[0] == "timestamp,anomaly_score,flag" and len(lines) == len(rows) + 1
    assert lines[201].endswith(",1") and flagged >= 1
    assert all(0.0 <= float(line.split(",")[1]) <= 1.0 for line in lines[1:])


def test_a_file_written_newest_first_is_read_in_time_order(tmp_path) -> None:
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    rows = [(start + timedelta(hours=h), c) for h, (_, c) in enumerate(daily_rhythm(24 * 10, seed=3))]
    rows[200] = (rows[200][0], 40)
    forward, backward = tmp_path / "f.csv", tmp_path / "b.csv"
    forward.write_text("timestamp,value\n" + "".join(f"{t.isoformat()},{v}\n" for t, v in rows))
    backward.write_text("timestamp,value\n" + "".join(f"{t.isoformat()},{v}\n" for t, v in reversed(rows)))
    assert run_file(forward, tmp_path / "f.out") == run_file(backward, tmp_path / "b.out") >= 1
    assert (tmp_path / "f.out").read_text() == (tmp_path / "b.out").read_text()


def test_decisions_are_causal() -> None:
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    points = [Point(start + timedelta(hours=h), float(c), "") for h, (_, c) in enumerate(daily_rhythm(24 * 6, seed=4))]
    full = detect(points, 3600.0)
    prefix = detect(points[:100], 3600.0)
    assert [(s, f) for _, s, f in full[:100]] == [(s, f) for _, s, f in prefix]


def test_step_is_inferred_from_irregular_timestamps() -> None:
    start = datetime(2026, 1, 5, tzinfo=timezone.utc)
    minutes = [0, 5, 10, 16, 20, 25, 31, 35]
    points = [Point(start + timedelta(minutes=m), 1.0, "") for m in minutes]
    assert infer_step_seconds(points) == 300


@pytest.mark.parametrize("kwargs", [{"alpha": 0}, {"min_count": 0}, {"halflife": 0}, {"spike_cap": 0.5}])
def test_invalid_configuration_is_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        CountSpikeConfig(**kwargs)


def test_a_baseline_saved_with_an_hour_of_day_rhythm_restores_it_for_weekdays_and_weekends() -> None:
    hourly = [0.5 + i / 23 for i in range(24)]
    rows = Baselines(CountSpikeConfig(seasonal_period=HOUR_SLOTS))
    rows.grow(1)
    rows.set_row(0, {"seen": 100, "level": 3.0, "second_moment": 10.0, "factors": hourly})
    assert list(rows.g[0]) == pytest.approx(hourly + hourly)
    monday, saturday = datetime(2026, 1, 5, 1, tzinfo=timezone.utc), datetime(2026, 1, 10, 1, tzinfo=timezone.utc)
    assert (hour_slot(monday), hour_slot(saturday)) == (1, 25)
