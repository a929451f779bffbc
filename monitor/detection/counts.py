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

import math
from dataclasses import dataclass
from datetime import datetime

import numpy as np

FACTOR_MIN, FACTOR_MAX = 0.25, 4.0


HOUR_SLOTS = 48


def hour_slot(t: datetime) -> int:
    """The seasonal slot of an hourly rhythm: the hour of the day (UTC), weekend hours apart (0–23
    Monday to Friday, 24–47 on Saturday and Sunday), since a Saturday's 1 a.m. is not a Tuesday's:
    a city's busiest hours, a market's quietest. A slot not yet seen counts as average."""
    return t.hour + (24 if t.weekday() >= 5 else 0)


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
    # The smallest negative-binomial size r: the most over-dispersion a baseline may claim. Real
    # sparse keys look wildly over-dispersed from a handful of bursts, and at r 0.5 four items
    # where 0.1 is usual would never be significant.
    min_size: float = 0.5

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


class Baselines:
    """The count-spike state of many series at once (one row per key), updated together: the
    tracker keeps one per window length and measure, so a bucket close costs a few array operations
    for every key, however many are quiet. `CountSpike` is one row of it.

    Seasonal factors are kept unnormalised (``g``); a slot's factor is its value over the row's
    mean, so learning one slot does not rewrite the others."""

    def __init__(self, config: CountSpikeConfig, rows: int = 0) -> None:
        self.config = config
        period = config.seasonal_period
        self.seen = np.zeros(rows, dtype=np.int64)
        self.level = np.zeros(rows)
        self.second = np.zeros(rows)
        self.g = np.ones((rows, period))
        # g's row means and a slot's factors, while g is unchanged: a bucket close asks for them
        # when testing and again when learning (the same arrays, computed once).
        self._mean: np.ndarray | None = None
        self._factors: dict[int, np.ndarray] = {}
        self._w = 1 - 0.5 ** (1 / config.halflife)
        self._ws = 1 - 0.5 ** (1 / config.seasonal_halflife)

    def __len__(self) -> int:
        return len(self.level)

    def grow(self, rows: int, seen: int = 0) -> None:
        """Add rows (new keys), as if they had been zero for `seen` updates."""
        if rows <= len(self):
            return
        extra = rows - len(self)
        self.seen = np.concatenate([self.seen, np.full(extra, seen, dtype=np.int64)])
        self.level = np.concatenate([self.level, np.zeros(extra)])
        self.second = np.concatenate([self.second, np.zeros(extra)])
        self.g = np.concatenate([self.g, np.ones((extra, self.g.shape[1]))])
        self._changed()

    def _changed(self) -> None:
        """g was written: what was computed from it is stale."""
        self._mean = None
        self._factors.clear()

    def _row_mean(self) -> np.ndarray:
        if self._mean is None:
            self._mean = self.g.mean(axis=1)
        return self._mean

    def factor(self, slot: int) -> np.ndarray:
        if not self.g.shape[1]:
            return np.ones(len(self))
        slot %= self.g.shape[1]
        cached = self._factors.get(slot)
        if cached is None:
            mean = self._row_mean()
            ratio = np.divide(self.g[:, slot], mean, out=np.ones(len(self)), where=mean > 0)
            # Clamped: a slot that has only ever been empty must not make its first item look infinite.
            cached = self._factors[slot] = np.clip(ratio, FACTOR_MIN, FACTOR_MAX)
        return cached

    def expected(self, slot: int = 0) -> np.ndarray:
        return np.maximum(self.config.min_rate, self.level * self.factor(slot))

    def dispersion(self, row: int) -> float:
        """Negative-binomial size r of one row from its variance (Poisson when not over-dispersed)."""
        level = float(self.level[row])
        excess = max(0.0, float(self.second[row]) - level**2) - level
        return math.inf if excess <= 1e-9 or self.seen[row] < 3 else max(self.config.min_size, level**2 / excess)

    def tail(self, row: int, count: float, mean: float) -> float:
        """P(X >= count) under the row's baseline (fractional counts are rounded down)."""
        k = math.floor(count + 1e-9)
        if k <= 0:
            return 1.0
        r = self.dispersion(row)
        return poisson_sf(k, mean) if math.isinf(r) else negbin_sf(k, mean, r)

    def candidates(self, counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """Rows whose count could flag (warm, enough items, enough above the expected): only these
        need a tail probability."""
        c = self.config
        return (self.seen >= c.warmup) & (counts >= c.min_count) & (counts >= c.min_ratio * expected)

    def test(
        self, counts: np.ndarray, slot: int = 0, tails: bool = False, also=()
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Test every row's count, learning nothing. Returns (expected, flags, p-values of the rows
        that were tested: the candidates, every warm row with `tails`, and the warm rows in `also`)."""
        c = self.config
        expected = self.expected(slot)
        test = (self.seen >= c.warmup) if tails else self.candidates(counts, expected)
        rows = set(np.flatnonzero(test).tolist()) | {r for r in also if self.seen[r] >= c.warmup}
        p_values = {int(i): self.tail(int(i), float(counts[i]), float(expected[i])) for i in sorted(rows)}
        flags = np.zeros(len(self), dtype=bool)
        for i, p in p_values.items():
            flags[i] = p < c.alpha and counts[i] >= c.min_count and counts[i] >= c.min_ratio * expected[i]
        return expected, flags, p_values

    def update(
        self, counts: np.ndarray, slot: int = 0, tails: bool = False, also=()
    ) -> tuple[np.ndarray, np.ndarray, dict[int, float]]:
        """Test every row's count (as `test`), then learn it: a flagged count at most `spike_cap`
        times the expected one."""
        expected, flags, p_values = self.test(counts, slot, tails, also)
        self.learn(np.where(flags, np.minimum(counts, self.config.spike_cap * expected), counts), slot)
        return expected, flags, p_values

    def learn(self, counts: np.ndarray, slot: int) -> None:
        c = self.config
        deseasonalised = counts / self.factor(slot)
        w = np.where(self.seen < c.warmup, 1.0 / (self.seen + 1), self._w)
        self.level += w * (deseasonalised - self.level)
        self.second += w * (deseasonalised**2 - self.second)
        if self.g.shape[1]:
            i = slot % self.g.shape[1]
            mean = self._row_mean()
            live = self.level > 0
            target = np.divide(counts * mean, self.level, out=np.zeros(len(self)), where=live)
            self.g[:, i] = np.where(live, self.g[:, i] + self._ws * (target - self.g[:, i]), self.g[:, i])
            mean = self.g.mean(axis=1, keepdims=True)
            np.divide(self.g, mean, out=self.g, where=mean > 0)  # keep the mean at one: no drift
            self._changed()
        self.seen += 1

    def row_state(self, row: int) -> dict:
        return {
            "seen": int(self.seen[row]),
            "level": float(self.level[row]),
            "second_moment": float(self.second[row]),
            "factors": [float(x) for x in self.g[row]],
        }

    def set_row(self, row: int, state: dict) -> None:
        self.seen[row] = state["seen"]
        self.level[row] = state["level"]
        self.second[row] = state["second_moment"]
        factors = list(state.get("factors") or [])
        if self.g.shape[1] and len(factors) * 2 == self.g.shape[1] == HOUR_SLOTS:
            factors = factors * 2  # saved before weekend hours were apart: the same rhythm for both
        if self.g.shape[1] and len(factors) == self.g.shape[1]:
            self.g[row] = factors
            self._changed()


class CountSpike:
    """One series' count-spike detector (one row of :class:`Baselines`)."""

    def __init__(self, config: CountSpikeConfig | None = None) -> None:
        self.config = config or CountSpikeConfig()
        self.rows = Baselines(self.config, 1)

    @property
    def seen(self) -> int:
        return int(self.rows.seen[0])

    def expected(self, slot: int = 0) -> float:
        return float(self.rows.expected(slot)[0])

    def update(self, count: float, slot: int = 0) -> Decision:
        """Test this bucket's count, then learn from it. `slot` is its place in the seasonal cycle."""
        warm = self.seen >= self.config.warmup
        expected, flags, p_values = self.rows.update(np.array([float(count)]), slot, tails=True)
        p = p_values.get(0, 1.0)
        return Decision(count, float(expected[0]), p, (1.0 - p) if warm else 0.0, bool(flags[0]))

    def clone(self) -> CountSpike:
        """A fresh detector with the same configuration."""
        return CountSpike(self.config)

    def snapshot(self) -> dict:
        return self.rows.row_state(0)

    @classmethod
    def restore(cls, config: CountSpikeConfig, state: dict) -> CountSpike:
        d = cls(config)
        d.rows.set_row(0, state)
        return d


def poisson_sf(k: int, mean: float) -> float:
    """P(X >= k) for X ~ Poisson(mean): the regularized lower incomplete gamma P(k, mean). It never
    underflows (exp(-mean) alone does past 745, which made every key that expects that many items
    blind to any burst), keeps tiny tails exact (no 1 - cdf), and costs O(sqrt k) at any volume."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    return _gamma_p(float(k), mean)


def negbin_sf(k: int, mean: float, r: float) -> float:
    """P(X >= k) for a negative binomial with this mean and size r (variance mean + mean²/r): the
    regularized incomplete beta I_q(k, r) with q = mean / (r + mean)."""
    if k <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    if r > 1e6 * max(1.0, mean):  # indistinguishable from a Poisson, where the fraction converges slowly
        return poisson_sf(k, mean)
    return _beta_i(float(k), r, mean / (r + mean))


def _gamma_p(a: float, x: float) -> float:
    """The regularized lower incomplete gamma P(a, x) (Numerical Recipes' series and continued
    fraction): the series where it is a small tail (x < a + 1), one minus the fraction elsewhere."""
    log_front = -x + a * math.log(x) - math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        while abs(term) > abs(total) * 1e-16:
            n += 1
            term *= x / n
            total += term
        return max(0.0, min(1.0, total * math.exp(log_front)))
    return max(
        0.0,
        min(1.0, 1.0 - math.exp(log_front) / _lentz(lambda i: -i * (i - a), lambda i: x + 2 * i + 1 - a, x + 1 - a)),
    )


def _beta_i(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta I_x(a, b), by its continued fraction on the side where it
    converges (one minus the other side's tail when x is past the mean)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return max(0.0, min(1.0, math.exp(log_front) * _beta_fraction(a, b, x) / a))
    return max(0.0, min(1.0, 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1 - x) / b))


def _beta_fraction(a: float, b: float, x: float) -> float:
    def numerator(i: int) -> float:
        m = i // 2
        if i % 2:  # odd terms
            return -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        return m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))

    return 1.0 / _lentz(numerator, lambda i: 1.0, 1.0)


def _lentz(a_of, b_of, start: float, limit: int = 100_000) -> float:
    """The continued fraction start + a1/(b1 + a2/(b2 + ...)) by the modified Lentz method."""
    tiny = 1e-300
    f = c = start if abs(start) > tiny else tiny
    d = 0.0
    for i in range(1, limit):
        an, b = a_of(i), b_of(i)
        d = b + an * d
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = c * d
        f *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return f
