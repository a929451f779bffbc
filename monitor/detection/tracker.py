"""Event-time buckets per key and the alert decisions on them: pure, replayable, snapshot-able.

Keys: ``all`` (every item), ``topic:<name>`` and ``ticker:<symbol>``. For each key and bucket the
tracker counts distinct items, negative items and negative probability mass. A bucket closes when
the watermark (the latest event time seen minus the allowed lateness) passes its end; an item later
than that is counted in the earliest open bucket and reported as late. Every key gets every bucket,
empty ones included, so quiet hours teach the baseline too.

Three tests per key on each closed bucket, each a :class:`CountSpike` or a binomial test:
negative volume, negative share (against the key's own baseline share), overall volume burst.
An episode is one alert (``opened``) with a cooldown, updated while it lasts and ``ended`` after
``end_after`` quiet buckets. Alert id = key + kind + the bucket the episode opened in, so a replay
produces the same ids and a delivery layer can refuse to send one twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from monitor.detection.counts import CountSpike, CountSpikeConfig

ALERT_KINDS = ("negative_volume", "negative_share", "volume_burst")


@dataclass(frozen=True)
class TrackerConfig:
    bucket: timedelta = timedelta(minutes=15)
    lateness: timedelta = timedelta(minutes=2)
    end_after: int = 4  # quiet buckets that end an episode
    share_alpha: float = 1e-3
    share_min_negatives: int = 4
    share_prior: float = 20.0  # pseudo-items of the baseline share (small keys lean on the global share)
    counts: CountSpikeConfig = field(default_factory=lambda: CountSpikeConfig(seasonal_period=24, warmup=4 * 24, halflife=4 * 24 * 3))


@dataclass(frozen=True)
class ScoredEvent:
    id: str
    published_at: datetime
    negative: bool
    p_bearish: float
    topic: str | None = None
    tickers: tuple[str, ...] = ()
    duplicate: bool = False


@dataclass(frozen=True)
class AlertEvent:
    id: str
    key: str
    kind: str
    status: str  # opened | updated | ended
    severity: str  # warning | high | critical
    window_start: datetime
    window_end: datetime
    observed: float
    baseline: float
    score: float
    item_ids: tuple[str, ...]


@dataclass
class _Bucket:
    items: int = 0
    negatives: int = 0
    mass: float = 0.0
    negative_ids: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class _KeyState:
    negatives: CountSpike
    volume: CountSpike
    share_neg: float = 0.0  # decayed negative count
    share_all: float = 0.0  # decayed item count
    episodes: dict[str, tuple[datetime, int]] = field(default_factory=dict)  # kind -> (opened bucket, quiet buckets)


def binomial_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    total = 0.0
    for i in range(k, n + 1):
        total += math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * math.log(p) + (n - i) * math.log1p(-p))
    return min(1.0, total)


def severity(p_value: float, ratio: float) -> str:
    if p_value < 1e-6 and ratio >= 4:
        return "critical"
    if p_value < 1e-4 and ratio >= 2.5:
        return "high"
    return "warning"


class NewsTracker:
    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        self.keys: dict[str, _KeyState] = {}
        self.open: dict[datetime, dict[str, _Bucket]] = defaultdict(lambda: defaultdict(_Bucket))
        self.watermark: datetime | None = None
        self.next_close: datetime | None = None
        self.seen_ids: dict[str, datetime] = {}  # id -> its bucket, forgotten after `remember`
        self.remember = timedelta(days=2)
        self.late = 0
        self.closed_any = False

    def _bucket_start(self, t: datetime) -> datetime:
        size = self.config.bucket.total_seconds()
        epoch = t.astimezone(timezone.utc).timestamp()
        return datetime.fromtimestamp(epoch - epoch % size, tz=timezone.utc)

    @staticmethod
    def keys_of(event: ScoredEvent) -> list[str]:
        return ["all"] + ([f"topic:{event.topic}"] if event.topic else []) + [f"ticker:{t}" for t in event.tickers]

    def add(self, event: ScoredEvent) -> list[AlertEvent]:
        """Count one scored item (duplicates and repeated ids are not counted) and close due buckets."""
        if event.duplicate or event.id in self.seen_ids:
            return []
        start = self._bucket_start(event.published_at)
        self.seen_ids[event.id] = start
        if self.next_close is None or (start < self.next_close and not self.closed_any):
            self.next_close = start
        if start < self.next_close:  # its bucket is closed: later than the lateness allows
            # The earliest open bucket takes it, so it still counts, and the decision already made stands.
            self.late += 1
            start = self.next_close
        for key in self.keys_of(event):
            bucket = self.open[start][key]
            bucket.items += 1
            if event.negative:
                bucket.negatives += 1
                bucket.negative_ids.append((event.p_bearish, event.id))
            bucket.mass += event.p_bearish
        mark = event.published_at - self.config.lateness
        self.watermark = mark if self.watermark is None or mark > self.watermark else self.watermark
        return self._close_due()

    def _close_due(self) -> list[AlertEvent]:
        alerts: list[AlertEvent] = []
        while self.next_close is not None and self.watermark is not None and self.next_close + self.config.bucket <= self.watermark:
            alerts += self._close(self.next_close, self.open.pop(self.next_close, {}))
            self.closed_any = True
            self.next_close += self.config.bucket
            if self.next_close.minute == 0 and self.next_close.hour == 0:  # once a day: forget old ids
                horizon = self.next_close - self.remember
                self.seen_ids = {i: t for i, t in self.seen_ids.items() if t >= horizon}
        return alerts

    def _state(self, key: str) -> _KeyState:
        if key not in self.keys:
            self.keys[key] = _KeyState(CountSpike(self.config.counts), CountSpike(self.config.counts))
        return self.keys[key]

    def _close(self, start: datetime, buckets: dict[str, _Bucket]) -> list[AlertEvent]:
        for key in buckets:
            self._state(key)
        slot = start.hour
        global_share = self._share("all")
        alerts = []
        for key, state in sorted(self.keys.items()):
            b = buckets.get(key, _Bucket())
            decisions = {
                "negative_volume": state.negatives.update(b.negatives, slot),
                "volume_burst": state.volume.update(b.items, slot),
            }
            flags = {kind: (d.flag, d.p_value, d.count, d.expected) for kind, d in decisions.items()}
            flags["negative_share"] = self._share_test(state, b, global_share)
            for kind, (flag, p, observed, expected) in flags.items():
                alerts += self._episode(key, kind, state, start, b, flag, p, observed, expected)
        return alerts

    def _share(self, key: str) -> float:
        s = self.keys.get(key)
        return (s.share_neg + 1) / (s.share_all + 4) if s else 0.25

    def _share_test(self, state: _KeyState, b: _Bucket, global_share: float):
        c = self.config
        prior = c.share_prior
        baseline = (state.share_neg + prior * global_share) / (state.share_all + prior)
        p = binomial_sf(b.negatives, b.items, baseline) if b.items else 1.0
        warm = state.negatives.seen > c.counts.warmup
        share = b.negatives / b.items if b.items else 0.0
        flag = warm and p < c.share_alpha and b.negatives >= c.share_min_negatives and share >= 2 * baseline
        decay = 0.5 ** (1 / c.counts.halflife)
        capped = min(b.negatives, math.ceil(2 * baseline * b.items)) if flag else b.negatives
        state.share_neg = decay * state.share_neg + capped
        state.share_all = decay * state.share_all + b.items
        return flag, p, share, baseline

    def _episode(self, key, kind, state, start, b, flag, p, observed, expected) -> list[AlertEvent]:
        end = start + self.config.bucket
        opened = state.episodes.get(kind)
        ids = tuple(i for _, i in sorted(b.negative_ids, key=lambda x: (-x[0], x[1]))[:5])
        ratio = observed / expected if expected > 0 else math.inf

        def event(status: str, since: datetime) -> AlertEvent:
            return AlertEvent(f"{key}|{kind}|{since.isoformat()}", key, kind, status, severity(p, ratio), since, end, float(observed), float(expected), round(1 - p, 6), ids)

        if flag and opened is None:
            state.episodes[kind] = (start, 0)
            return [event("opened", start)]
        if flag and opened is not None:
            state.episodes[kind] = (opened[0], 0)
            return [event("updated", opened[0])]
        if opened is not None:
            quiet = opened[1] + 1
            if quiet >= self.config.end_after:
                del state.episodes[kind]
                return [event("ended", opened[0])]
            state.episodes[kind] = (opened[0], quiet)
        return []

    def flush(self, until: datetime) -> list[AlertEvent]:
        """Close every bucket ending at or before `until` (end of a replay, or a clock tick)."""
        self.watermark = max(self.watermark or until, until)
        return self._close_due()
