"""A spike detector for counts per time bucket: a pure state machine, no clock, no I/O.

Each ``update(count, slot)`` tests the new bucket's count against the series' own baseline:

* the baseline is an exponentially weighted mean per *level*, times a seasonal factor per slot
  (e.g. the hour of the day), so a busy market open is not a spike and a quiet night is not calm;
* the test is a one-sided negative-binomial tail probability, with the over-dispersion estimated
  from the series itself, so small counts are judged as small counts (3 items where 1 is usual is
  not significant; 12 is);
* buckets that were flagged update the baseline only up to a cap, so an episode does not raise the
  bar for its own continuation or for the next one;
* no flag before ``warmup`` buckets have been seen.

>>> d = CountSpike()
>>> flags = [d.update(c).flag for c in [2, 3, 1, 2, 2, 3, 2, 1, 2, 3] * 5 + [15]]
>>> flags[-1], any(flags[:-1])
(True, False)
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

FACTOR_MIN, FACTOR_MAX = 0.25, 4.0


@dataclass(frozen=True)
class CountSpikeConfig:
    alpha: float = 1e-3  # tail probability under which a bucket is a spike
    min_count: int = 4  # never flag fewer items than this
    min_ratio: float = 2.0  # nor a count less than this multiple of the expected one
    warmup: int = 24  # buckets before any flag
    halflife: float = 72.0  # buckets over which the level forgets half its past
    seasonal_period: int = 0  # slots per cycle (24 for hourly buckets over a day); 0: none
    seasonal_halflife: float = 14.0  # cycles over which a slot's factor forgets half its past
    min_rate: float = 0.2  # floor of the expected count, so an empty series is not infinitely sensitive
    spike_cap: float = 1.5  # a flagged bucket updates the baseline with at most cap × expected

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError("alpha must be in (0, 1)")
        if self.min_count < 1 or self.warmup < 0 or self.halflife <= 0 or self.min_rate <= 0:
            raise ValueError("min_count, halflife and min_rate must be positive, warmup non-negative")
        if self.seasonal_period < 0 or self.seasonal_halflife <= 0 or self.spike_cap < 1:
            raise ValueError("seasonal_period >= 0, seasonal_halflife > 0, spike_cap >= 1")


@dataclass(frozen=True)
class Decision:
    count: float
    expected: float
    p_value: float
    score: float  # in [0, 1]: 1 - p-value, 0 during warm-up
    flag: bool


@dataclass
class CountSpike:
    config: CountSpikeConfig = field(default_factory=CountSpikeConfig)
    seen: int = 0
    level: float = 0.0  # weighted mean of de-seasonalised counts
    second_moment: float = 0.0
    factors: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.config.seasonal_period and not self.factors:
            self.factors = [1.0] * self.config.seasonal_period

    def _factor(self, slot: int) -> float:
        # Clamped: a slot that has only ever been empty must not make its first item look infinite.
        return min(FACTOR_MAX, max(FACTOR_MIN, self.factors[slot % len(self.factors)])) if self.factors else 1.0

    def expected(self, slot: int = 0) -> float:
        return max(self.config.min_rate, self.level * self._factor(slot))

    def update(self, count: float, slot: int = 0) -> Decision:
        """Test this bucket's count, then learn from it. `slot` is its place in the seasonal cycle."""
        c = self.config
        expected = self.expected(slot)
        if self.seen < c.warmup:
            decision = Decision(count, expected, 1.0, 0.0, False)
        else:
            p = self._tail(count, expected)
            flag = p < c.alpha and count >= c.min_count and count >= c.min_ratio * expected
            decision = Decision(count, expected, p, 1.0 - p, flag)
        self._learn(min(count, c.spike_cap * expected) if decision.flag else count, slot)
        return decision

    def _dispersion(self) -> float:
        """Negative-binomial size r from the series' variance (Poisson when not over-dispersed)."""
        variance = max(0.0, self.second_moment - self.level**2)
        excess = variance - self.level
        return math.inf if excess <= 1e-9 or self.seen < 3 else max(0.5, self.level**2 / excess)

    def _tail(self, count: float, mean: float) -> float:
        k = math.ceil(count)
        if k <= 0:
            return 1.0
        r = self._dispersion()
        return poisson_sf(k, mean) if math.isinf(r) else negbin_sf(k, mean, r)

    def _learn(self, count: float, slot: int) -> None:
        c = self.config
        deseasonalised = count / self._factor(slot)
        w = 1.0 / (self.seen + 1) if self.seen < c.warmup else 1 - 0.5 ** (1 / c.halflife)
        self.level += w * (deseasonalised - self.level)
        self.second_moment += w * (deseasonalised**2 - self.second_moment)
        if self.factors and self.level > 0:
            ws = 1 - 0.5 ** (1 / c.seasonal_halflife)
            i = slot % len(self.factors)
            self.factors[i] += ws * (count / self.level - self.factors[i])
            mean = sum(self.factors) / len(self.factors)
            if mean > 0:  # factors average to one, so the level keeps its meaning
                self.factors = [f / mean for f in self.factors]
        self.seen += 1

    def clone(self) -> CountSpike:
        """A fresh detector with the same configuration."""
        return CountSpike(self.config)

    def snapshot(self) -> dict:
        return copy.deepcopy(
            {"seen": self.seen, "level": self.level, "second_moment": self.second_moment, "factors": self.factors}
        )

    @classmethod
    def restore(cls, config: CountSpikeConfig, state: dict) -> CountSpike:
        return cls(config, state["seen"], state["level"], state["second_moment"], list(state["factors"]))


_DIRECT = 700.0  # exp(-700) is still a normal double; past ~745 it is 0 and the direct sum breaks


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean). Past a mean of 700 in log space: exp(-mean) alone underflows
    past 745, which made every key that expects that many items (the `all` key of a busy feed, long
    windows) blind to any burst."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if mean < _DIRECT:  # the usual case: the direct sum, fast and exact enough
        term = cdf = math.exp(-mean)
        for i in range(1, k):
            term *= mean / i
            cdf += term
        return max(0.0, min(1.0, 1.0 - cdf))
    log_mean = math.log(mean)
    return _tail(lambda i: -mean + i * log_mean - math.lgamma(i + 1), k, mean)


def negbin_sf(k: int, mean: float, r: float) -> float:
    """P(X >= k) for a negative binomial with this mean and size r (variance mean + mean²/r)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    p = r / (r + mean)
    log_p = math.log(p)
    if r * log_p > -_DIRECT:  # P(X = 0) does not underflow: the direct sum
        term = cdf = p**r
        for i in range(1, k):
            term *= (i - 1 + r) / i * (1 - p)
            cdf += term
        return max(0.0, min(1.0, 1.0 - cdf))
    log_q, base = math.log1p(-p), -math.lgamma(r)
    return _tail(lambda i: math.lgamma(i + r) + base - math.lgamma(i + 1) + r * log_p + i * log_q, k, mean)


def _tail(log_pmf, k: int, mode: float) -> float:
    """P(X >= k) from a unimodal log-pmf: past the mode the upper tail is summed directly (no
    cancellation against 1, so tiny p-values stay exact), below it one minus the lower tail."""
    if k > mode:
        logs = [log_pmf(k)]
        i = k + 1
        while True:  # terms fall from here on; stop once they no longer change the sum
            logs.append(log_pmf(i))
            if logs[-1] < logs[0] - 40:
                break
            i += 1
        return min(1.0, math.exp(_log_sum(logs)))
    return max(0.0, min(1.0, 1.0 - math.exp(_log_sum([log_pmf(i) for i in range(k)]))))


def _log_sum(logs: list[float]) -> float:
    top = max(logs)
    return top + math.log(sum(math.exp(x - top) for x in logs))
