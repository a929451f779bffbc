"""Event-time buckets per key and the alert decisions on them: pure, replayable, snapshot-able.

Keys: ``all`` (every item), ``topic:<name>`` and ``ticker:<symbol>``. For each key and bucket the
tracker counts distinct items, negative items and negative probability mass. Every key gets every
bucket, empty ones included, so quiet hours teach the baseline too.

Event time does not depend on drain order. Items come from source partitions (the news topic's),
each read in its own order, interleaved in any way. The tracker keeps a watermark per source (the
latest event time it has shown, minus the allowed lateness) and closes a bucket only when every
source's watermark has passed its end, or the source said it has nothing more for now (caught up:
the scoring stage announces it). An item older than its own source's watermark is late: counted in
``late`` and left out of every bucket (never moved into another one, where it could make a spike).
Whether an item is late depends only on its own partition's order, and a bucket closes only when
nothing on time can still reach it, so the buckets, and the alerts, are the same whatever the
number of partitions, the drain order or the batch boundaries.

At each closed bucket, every key's trailing windows (15 min to 24 h) are tested, for all keys at
once (a :class:`~monitor.detection.counts.Baselines` per window length, and a binomial test):
negative volume, negative share (against the key's own baseline share), overall volume burst.
An item filed under many tickers counts for a share of each. An episode is one alert per key
(``opened``, whichever tests or windows flag it), ``updated`` while buckets keep flagging and
``ended`` after ``end_after`` quiet buckets: the quiet period is the cooldown. Alert id = key + the
bucket the episode's first negative fell in, so a replay produces the same ids and the outbox
refuses to write or send one twice.
"""

from __future__ import annotations

import bisect
import math
from collections import ChainMap, defaultdict, deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

import numpy as np

from monitor.detection.counts import HOUR_SLOTS, Baselines, CountSpikeConfig, hour_slot
from monitor.records import AlertEvent, ScoredEvent

ALERT_KINDS = ("negative_volume", "negative_share", "volume_burst")


class WindowTest(NamedTuple):
    """One test on one completed window of one key."""

    flag: bool
    p_value: float
    observed: float  # in the test's unit: items, or the negative share
    expected: float


class Flagged(NamedTuple):
    """A test that flagged, with the window it flagged in (the most significant per kind wins)."""

    test: WindowTest
    ids: list[tuple[float, str]]  # (p_bearish, id) of the window's top negative items
    window_start: datetime
    window: _Bucket | None = None  # the window's sums (items, negatives)
    buckets: int = 1  # its length


@dataclass(frozen=True)
class TrackerConfig:
    bucket: timedelta = timedelta(minutes=15)
    lateness: timedelta = timedelta(minutes=2)
    dedup_window: timedelta = timedelta(hours=24)  # as the scoring stage's monitor.dedup_window_hours
    end_after: int = 8  # quiet buckets that end an episode (2 hours of 15-minute buckets)
    share_alpha: float = 1e-3
    share_min_negatives: int = 3
    share_prior: float = 20.0  # pseudo-items of the baseline share (small keys lean on the global share)
    # A negative-volume spike also needs the share of negatives up this much: more news of the
    # usual mix (an earnings day) is a volume burst, not bad news.
    volume_share_lift: float = 1.5
    # Three negatives about one key in a window is the smallest signal worth a page (two is not).
    # Chosen on the real StockNet suite (docs/detection.md): an over-dispersion floor of r = 2 and
    # an expected-count floor of 0.1 a window, so four bearish tweets in a day on a name that
    # usually gets one a week are significant.
    counts: CountSpikeConfig = field(
        default_factory=lambda: CountSpikeConfig(
            min_count=3, seasonal_period=HOUR_SLOTS, warmup=4 * 24, halflife=4 * 24 * 3, min_size=2.0, min_rate=0.1
        )
    )
    # Trailing windows of 1, 4, 16 and 96 buckets (15 min, 1 h, 4 h, 24 h), each tested at every
    # bucket against its own baseline: a burst shows in the short one at the end of its first
    # bucket, a slow wave on a sparse key (a few items an hour over a day) only in the long ones.
    scales: tuple[int, ...] = (1, 4, 16, 96)
    # An item filed under more than this many tickers (a market wrap, cashtag spam) counts
    # shared_tickers / n for each of them, so it cannot make every one of them spike.
    shared_tickers: int = 2
    # Early checks: the bucket still open is tested every `early` (a grid from its start), each
    # point once the watermark has passed it, with the items before it (the same ones whatever the
    # drain order). They can only open an episode, never teach a baseline; the bucket's close
    # decides the rest. None: tests at bucket closes only.
    early: timedelta | None = timedelta(minutes=1)
    # A negative test pages only when the window's `confidence_top` most bearish items have, on
    # average, at least this p(bearish): uncertain model calls are not an alert analysts can trust
    # (on the real StockNet suite: precision 0.26 -> 0.31 at the same recall, docs/detection.md).
    min_confidence: float = 0.85
    confidence_top: int = 3
    # A key whose episode has ended opens a new one only on news it has not paged yet: for this long
    # after an episode flagged them, its negatives are left out of the key's next opening windows
    # (the test is run again without them), so one story whose day window still holds it after two
    # quiet hours does not page again at its next tweet. None: every flagged window may open one.
    paged_memory: timedelta | None = timedelta(hours=24)

    def counts_for(self, scale: int) -> CountSpikeConfig:
        """A scale's baseline: it learns at every bucket (the windows slide), so its memory is in
        buckets; a window of a day or longer has no hour of the day. An hour slot learns at
        each of its buckets (4 a day at 15 minutes), so its half-life is counted in those."""
        c = self.counts
        daily = scale * self.bucket >= timedelta(days=1)
        return replace(
            c,
            warmup=max(c.warmup, 2 * scale),
            halflife=max(c.halflife, 4.0 * scale),
            seasonal_period=0 if daily else c.seasonal_period,
            seasonal_halflife=c.seasonal_halflife * max(1, round(timedelta(hours=1) / self.bucket)),
        )

    def weight(self, tickers: int) -> float:
        """What one item counts for each ticker it names."""
        return 1.0 if tickers <= self.shared_tickers else self.shared_tickers / tickers


@dataclass
class _Bucket:
    """One key's counts in one closed bucket (or, from an earlier version's snapshot, an open one)."""

    items: float = 0.0
    negatives: float = 0.0
    mass: float = 0.0
    negative_ids: list[tuple[float, str]] = field(default_factory=list)  # (p_bearish, id)
    shared: int = 0  # negatives that named more than `shared_tickers` tickers (weighted down)
    age: int = 0  # in a window: how many buckets back its first negative lies

    def add(self, event: ScoredEvent, weight: float, shared: bool) -> None:
        self.items += weight
        self.mass += weight * event.p_bearish
        if event.negative:
            self.negatives += weight
            self.negative_ids.append((event.p_bearish, event.id))
            self.shared += shared


def _bucket_state(b: _Bucket) -> list:
    return [b.items, b.negatives, b.mass, [list(x) for x in b.negative_ids], b.shared]


def _bucket_from(state: list) -> _Bucket:
    items, negatives, mass, ids, extra = state[:5]
    return _Bucket(items, negatives, mass, [tuple(x) for x in ids], extra if isinstance(extra, int) else 0)


class _Scale:
    """One window length, every key: the trailing window's sums, and the baselines it is tested against."""

    def __init__(self, scale: int, config: CountSpikeConfig) -> None:
        self.scale = scale
        self.negatives = Baselines(config)
        self.volume = Baselines(config, 1)  # key `all` only: a volume burst is about the news flow overall
        self.items = np.zeros(0)
        self.negative_sum = np.zeros(0)
        self.share_neg = np.zeros(0)  # decayed negative count
        self.share_all = np.zeros(0)  # decayed item count
        self.decay = 0.5 ** (1 / config.halflife)

    def grow(self, rows: int, seen: int) -> None:
        extra = rows - len(self.items)
        if extra > 0:
            self.negatives.grow(rows, seen)
            z = np.zeros(extra)
            self.items, self.negative_sum = np.concatenate([self.items, z]), np.concatenate([self.negative_sum, z])
            self.share_neg, self.share_all = np.concatenate([self.share_neg, z]), np.concatenate([self.share_all, z])


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
        total += math.exp(
            math.lgamma(n + 1)
            - math.lgamma(i + 1)
            - math.lgamma(n - i + 1)
            + i * math.log(p)
            + (n - i) * math.log1p(-p)
        )
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
        self.keys: dict[str, int] = {}  # key -> its row in every scale's arrays
        self.names: list[str] = []
        self.scales = [_Scale(scale, self.config.counts_for(scale)) for scale in self.config.scales]
        self.ring: deque[dict[int, _Bucket]] = deque(maxlen=max(self.config.scales))  # the last closed buckets
        self.episodes: dict[str, tuple[datetime, int]] = {}  # key -> (opened at, quiet buckets since)
        # Items of the buckets not yet closed: counted when their bucket closes, in event-time order.
        self.open: dict[datetime, list[ScoredEvent]] = defaultdict(list)
        self.last_of_key: dict[str, datetime] = {}  # dedup key -> event time of its latest item (counted or not)
        self.counted: dict[
            datetime, dict[str, _Bucket]
        ] = {}  # open buckets restored from an earlier version's snapshot
        self.watermark: datetime | None = None  # where buckets are closed up to (the sources' minimum)
        self.sources: dict[str, datetime | None] = {}  # source -> its watermark (None: not heard from yet)
        self.idle: set[str] = set()  # sources caught up: they hold no bucket open
        self.next_close: datetime | None = None
        self.seen_ids: dict[str, datetime] = {}  # id -> its bucket, forgotten after `remember`
        self.remember = timedelta(days=2)
        self.late = 0
        self.closed_any = False
        self.closed_buckets = 0
        self.paged: dict[str, dict[str, datetime]] = {}  # key -> negative ids its episodes flagged -> when
        # Early checks of the open bucket: the last point checked, the keys they flagged, and each
        # key's counted negatives at that point (to see which keys a new point brings negatives).
        self.early_to: datetime | None = None
        self.early_flagged: set[str] = set()
        self._early_negatives: dict[str, float] | None = None

    def _bucket_start(self, t: datetime) -> datetime:
        size = self.config.bucket.total_seconds()
        epoch = t.astimezone(timezone.utc).timestamp()
        return datetime.fromtimestamp(epoch - epoch % size, tz=timezone.utc)

    @staticmethod
    def keys_of(event: ScoredEvent) -> list[str]:
        return ["all"] + ([f"topic:{event.topic}"] if event.topic else []) + [f"ticker:{t}" for t in event.tickers]

    def add(self, event: ScoredEvent) -> list[AlertEvent]:
        """Take one scored item (repeated ids are ignored) and close due buckets. Near-duplicates are
        decided when the bucket closes, in event-time order, so not by the order items came in."""
        if (event.duplicate and event.dedup_key is None) or event.id in self.seen_ids:
            return []
        start = self._bucket_start(event.published_at)
        self.seen_ids[event.id] = start
        self._expect(event.source, event.partitions)
        own = self.sources.get(event.source)
        if (own is not None and event.published_at < own) or (
            self.closed_any and self.next_close is not None and start < self.next_close
        ):
            self.late += 1  # older than its own partition allows (or its bucket closed): left out
            return []
        if self.next_close is None or (start < self.next_close and not self.closed_any):
            self.next_close = start
        self.open[start].append(event)
        mark = event.published_at - self.config.lateness
        self.sources[event.source] = mark if own is None or mark > own else own
        self.idle.discard(event.source)
        return self._advance()

    def caught_up(self, source: str, partitions: int = 1) -> list[AlertEvent]:
        """A source has nothing more for now (the scoring stage read its partition to the end): it
        no longer holds buckets open, until its next item."""
        self._expect(source, partitions)
        self.idle.add(source)
        return self._advance()

    def _expect(self, source: str, partitions: int) -> None:
        """Every partition of a source's topic is a source, heard from or not: the watermark waits for each."""
        topic = source.rpartition("/")[0] if "/" in source else None
        names = [f"{topic}/{p}" for p in range(partitions)] if topic is not None else [source]
        for name in names:
            self.sources.setdefault(name, None)

    def _advance(self) -> list[AlertEvent]:
        """Move the watermark to the slowest source that is not caught up (the furthest one when all are)."""
        busy = [w for s, w in self.sources.items() if s not in self.idle]
        heard = [w for w in busy if w is not None]
        if len(heard) < len(busy):
            return []  # a partition not heard from yet may still hold the earliest items
        marks = heard or [w for w in self.sources.values() if w is not None]
        if not marks:
            return []
        mark = min(marks) if busy else max(marks)
        if self.watermark is None or mark > self.watermark:
            self.watermark = mark
        return self._close_due()

    def all_caught_up(self) -> bool:
        return bool(self.sources) and all(s in self.idle for s in self.sources)

    def finish(self) -> list[AlertEvent]:
        """The input has ended (every source caught up, nothing more to come): close what is left, and
        enough quiet buckets after the last item for open episodes to end."""
        marks = [w for w in self.sources.values() if w is not None]
        if not marks:
            return []
        return self.flush(max(marks) + self.config.lateness + self.config.bucket * (self.config.end_after + 4))

    def _close_due(self) -> list[AlertEvent]:
        alerts: list[AlertEvent] = []
        while (
            self.next_close is not None
            and self.watermark is not None
            and self.next_close + self.config.bucket <= self.watermark
        ):
            alerts += self._early_until(self.next_close + self.config.bucket)  # every point, however far the jump
            alerts += self._close(
                self.next_close, self._count(self.open.pop(self.next_close, []), self.counted.pop(self.next_close, {}))
            )
            self.closed_any = True
            self.closed_buckets += 1
            self.next_close += self.config.bucket
            if self.next_close.minute == 0 and self.next_close.hour == 0:  # once a day: forget old ids
                horizon = self.next_close - self.remember
                self.seen_ids = {i: t for i, t in self.seen_ids.items() if t >= horizon}
                keep = self.next_close - self.config.dedup_window
                self.last_of_key = {k: t for k, t in self.last_of_key.items() if t >= keep}
                if self.config.paged_memory is not None:
                    since = self.next_close - self.config.paged_memory
                    kept = {k: {i: t for i, t in ids.items() if t >= since} for k, ids in self.paged.items()}
                    self.paged = {k: ids for k, ids in kept.items() if ids}
        if self.watermark is not None:
            alerts += self._early_until(self.watermark)
        return alerts

    def _early_until(self, limit: datetime) -> list[AlertEvent]:
        """The open bucket's early checks at every grid point up to `limit` (inclusive) and before
        its end, in order. A point is checked with the items before it, which are all in once the
        watermark has passed it (a later one is late), so a point gives the same answer whenever it
        is checked: as soon as the watermark passes it, or when a jump closes its bucket."""
        every, start = self.config.early, self.next_close
        if not every or start is None or not self.closed_any:  # before the first close nothing is warm
            return []
        end = start + self.config.bucket
        point = (self.early_to or start) + every
        if point >= end or point > limit:
            return []
        events = sorted(self.open.get(start, ()), key=lambda e: (e.published_at, e.id))
        times = [e.published_at for e in events]
        alerts: list[AlertEvent] = []
        while point < end and point <= limit:
            before = bisect.bisect_left(times, point)
            if before and times[before - 1] >= point - every:  # the point brings items: check it
                alerts += self._early(start, point, events[:before])
            self.early_to = point
            point += every
        return alerts

    def _count(
        self,
        events: list[ScoredEvent],
        counted: dict[str, _Bucket] | None = None,
        last_of_key: MutableMapping[str, datetime] | None = None,
    ) -> dict[str, _Bucket]:
        """A closing bucket's items counted per key, in (event time, id) order; an item is a
        near-duplicate (not counted) when an earlier item with its dedup key lies within the window,
        as the scoring stage flags it when items come in order (here: whatever order they came in).
        An item filed under many tickers counts `weight` for each. `counted`: what an earlier
        version's snapshot had already counted in this bucket. `last_of_key`: where near-duplicates
        are looked up and recorded (the tracker's own by default)."""
        buckets: dict[str, _Bucket] = defaultdict(_Bucket, counted or {})
        window = self.config.dedup_window
        seen = self.last_of_key if last_of_key is None else last_of_key
        for event in sorted(events, key=lambda e: (e.published_at, e.id)):
            if event.dedup_key is not None:
                last = seen.get(event.dedup_key)
                seen[event.dedup_key] = event.published_at
                if last is not None and event.published_at - last <= window:
                    continue
            n = len(event.tickers)
            weight, shared = self.config.weight(n), n > self.config.shared_tickers
            for key in self.keys_of(event):
                ticker = key.startswith("ticker:")
                buckets[key].add(event, weight if ticker else 1.0, shared and ticker)
        return buckets

    def _row(self, key: str) -> int:
        row = self.keys.get(key)
        if row is None:
            # A key seen for the first time had zero items in every window closed so far.
            row = self.keys[key] = len(self.names)
            self.names.append(key)
            for sc in self.scales:
                sc.grow(len(self.names), self.closed_buckets)
        return row

    def _window(self, current: dict[int, _Bucket], row: int, scale: int) -> _Bucket:
        """One key's trailing window of `scale` buckets (the one closing now included)."""
        w = _Bucket()
        parts = [current.get(row)] + [self.ring[-i].get(row) for i in range(1, min(scale, len(self.ring) + 1))]
        for age, b in enumerate(parts):
            if b is not None:
                if b.negatives:
                    w.age = age
                w.items, w.negatives, w.shared = w.items + b.items, w.negatives + b.negatives, w.shared + b.shared
                w.negative_ids += b.negative_ids
        w.negative_ids.sort(key=lambda x: (-x[0], x[1]))
        return w

    def _slide(self, current: dict[int, _Bucket]) -> None:
        """Each scale's window sums: the closing bucket in, the one `scale` buckets back out."""
        for sc in self.scales:
            out = self.ring[-sc.scale] if len(self.ring) >= sc.scale else {}
            for row, b in current.items():
                sc.items[row] += b.items
                sc.negative_sum[row] += b.negatives
            for row, b in out.items():
                sc.items[row] -= b.items
                sc.negative_sum[row] -= b.negatives
                if sc.items[row] < 1e-9:  # fractional weights leave rounding dust behind
                    sc.items[row] = sc.negative_sum[row] = 0.0
                elif sc.negative_sum[row] < 1e-9:
                    sc.negative_sum[row] = 0.0

    def _close(self, start: datetime, buckets: dict[str, _Bucket]) -> list[AlertEvent]:
        current = {self._row(key): b for key, b in buckets.items()}
        self._slide(current)
        global_share = self._share("all")
        slot = hour_slot(start)  # the hour the window ends in, weekend hours apart
        ending = [self.keys[k] for k in self.episodes]  # open episodes: their shortest window's test is needed
        tests: dict[int, dict[int, dict[str, WindowTest]]] = defaultdict(dict)  # row -> scale -> kind -> test
        shortest: dict[int, WindowTest] = {}
        fresh = np.zeros(len(self.names), dtype=bool)  # keys with a negative in the closing bucket
        fresh[[row for row, b in current.items() if b.negatives > 0]] = True
        for i, sc in enumerate(self.scales):
            flagging, probed = self._window_tests(
                sc, sc.items, sc.negative_sum, slot, global_share, fresh, ending if i == 0 else []
            )
            for row, found in flagging.items():
                tests[row][i] = found
            shortest.update(probed)
        alerts = self._decide(start, start + self.config.bucket, current, tests, shortest)
        self.ring.append(current)
        self.early_to, self.early_flagged, self._early_negatives = None, set(), None
        return alerts

    def _early(self, start: datetime, point: datetime, events: list[ScoredEvent]) -> list[AlertEvent]:
        """One early check of the open bucket at `point`, on its items before it (`events`): each
        window of the last closed buckets plus this part of the open one, where the point brought a
        key a new negative. Only the negative-volume test, against the full window's baseline: a
        part has fewer items to show than the whole, so the test errs on the quiet side and says
        early what the close would say. It opens episodes only; baselines learn at the close."""
        if self._early_negatives is None:  # first check of this bucket (or since a restart)
            done = self.early_to or start
            earlier = [e for e in events if e.published_at < done]
            before = self._count(earlier, last_of_key=ChainMap({}, self.last_of_key))
            self._early_negatives = {k: b.negatives for k, b in before.items()}
        counted = self._count(events, last_of_key=ChainMap({}, self.last_of_key))
        current = {self._row(key): b for key, b in counted.items()}
        fresh = np.zeros(len(self.names), dtype=bool)
        fresh[[self.keys[k] for k, b in counted.items() if b.negatives > self._early_negatives.get(k, 0.0)]] = True
        self._early_negatives = {k: b.negatives for k, b in counted.items()}
        if not fresh.any():
            return []
        global_share, slot = self._share("all"), hour_slot(start)
        tests: dict[int, dict[int, dict[str, WindowTest]]] = defaultdict(dict)
        for i, sc in enumerate(self.scales):
            items, negatives = sc.items.copy(), sc.negative_sum.copy()
            for sign, parts in ((-1.0, self.ring[-sc.scale] if len(self.ring) >= sc.scale else {}), (1.0, current)):
                for row, b in parts.items():
                    items[row] += sign * b.items
                    negatives[row] += sign * b.negatives
            np.maximum(items, 0.0, out=items)
            np.maximum(negatives, 0.0, out=negatives)
            flagging, _ = self._window_tests(sc, items, negatives, slot, global_share, fresh, [], learn=False)
            for row, found in flagging.items():
                tests[row][i] = found
        return self._decide(start, point, current, tests, {}, early=True)

    def _decide(
        self,
        start: datetime,
        end: datetime,
        current: dict[int, _Bucket],
        tests: dict[int, dict[int, dict[str, WindowTest]]],
        shortest: dict[int, WindowTest],
        early: bool = False,
    ) -> list[AlertEvent]:
        """The alerts of one check (a bucket's close, or an early check ending at `end`)."""
        alerts = []
        # Tickers first: negatives that flagged tickers explain do not page again for the topic or
        # the whole market (one company's bad day is one alert, not three).
        explained: dict[int, set[str]] = defaultdict(set)  # scale -> negative item ids of flagged tickers
        rows = set(tests) | {self.keys[k] for k in self.episodes}
        order = sorted(rows, key=lambda r: (not self.names[r].startswith("ticker:"), self.names[r]))
        for row in order:
            key = self.names[row]
            flagged: dict[str, Flagged] = {}
            shared = 0
            for i, sc in enumerate(self.scales):
                kinds = tests.get(row, {}).get(i)
                ticker = key.startswith("ticker:")
                w = self._window(current, row, sc.scale) if kinds else None
                if w is not None and not self._confident(w):
                    # Uncertain calls do not page: a negative test counts only when the window's
                    # top negatives are, on average, confidently bearish.
                    kinds = {k: t for k, t in (kinds or {}).items() if k == "volume_burst"} or None
                if kinds is None and not (ticker and key in self.episodes):
                    continue
                w = w or self._window(current, row, sc.scale)
                ids = {x[1] for x in w.negative_ids}
                if ticker:
                    # A ticker that flags now, or whose episode is still open, explains its negatives
                    # (the story goes on after its first window: still one alert, not one per topic).
                    explained[i] |= ids
                elif kinds and len(explained[i] & ids) * 2 >= max(1, len(ids)):
                    continue  # mostly one ticker's story
                if kinds and key not in self.episodes and key in self.paged:
                    kinds = self._unpaged(key, row, sc, w, kinds, end)
                window_start = start - w.age * self.config.bucket  # where its negatives begin
                for kind, test in (kinds or {}).items():
                    if test.flag and (kind not in flagged or test.p_value < flagged[kind].test.p_value):
                        flagged[kind] = Flagged(test, w.negative_ids[:5], window_start, w, sc.scale)
                        shared = max(shared, w.shared) if kind != "volume_burst" else shared
            if early:
                if not flagged:
                    continue
                self.early_flagged.add(key)  # the close does not count this bucket as quiet
                if key in self.episodes:
                    continue  # an open episode is updated at the close
            elif not flagged and key in self.early_flagged:
                self.episodes[key] = (self.episodes[key][0], 0)
                continue
            alert = self._episode(key, row, end, flagged, shortest.get(row), current, shared)
            if alert is not None:
                alerts.append(alert)
            if flagged and self.config.paged_memory is not None:
                paged = self.paged.setdefault(key, {})
                for f in flagged.values():
                    if f.window is not None:
                        paged.update((i, end) for _, i in f.window.negative_ids)
        return alerts

    def _unpaged(
        self, key: str, row: int, sc: _Scale, w: _Bucket, kinds: dict[str, WindowTest], end: datetime
    ) -> dict[str, WindowTest] | None:
        """A key's negative tests on a window without the negatives its recent episodes already
        flagged (`paged_memory`): what is left of them must be significant on its own."""
        c = self.config
        assert c.paged_memory is not None
        horizon = end - c.paged_memory
        paged = self.paged[key]
        ids = [i for _, i in w.negative_ids]
        old = sum(1 for i in ids if i in paged and paged[i] >= horizon)
        if not old:
            return kinds
        fresh = w.negatives * (len(ids) - old) / len(ids)  # items filed under many tickers weigh less
        left: dict[str, WindowTest] = {}
        for kind, test in kinds.items():
            if kind == "volume_burst":
                left[kind] = test
                continue
            if kind == "negative_volume":
                counts = sc.negatives.config
                enough = fresh + 1e-9 >= counts.min_count and fresh >= counts.min_ratio * test.expected
                p = sc.negatives.tail(row, fresh, test.expected) if enough else 1.0
                flag = enough and p < counts.alpha
                observed = fresh
            else:  # negative_share: the binomial on the window without them
                k = math.floor(fresh + 1e-9)
                n = max(k, round(w.items - (w.negatives - fresh)))
                enough = k >= c.share_min_negatives
                p = binomial_sf(k, n, test.expected) if enough else 1.0
                flag = enough and p < c.share_alpha
                observed = k / n if n else 0.0
            if flag:
                left[kind] = WindowTest(True, p, observed, test.expected)
        return left or None

    def _confident(self, w: _Bucket) -> bool:
        top = w.negative_ids[: self.config.confidence_top]
        return bool(top) and sum(p for p, _ in top) / len(top) >= self.config.min_confidence

    def _window_tests(
        self,
        sc: _Scale,
        items: np.ndarray,
        negatives: np.ndarray,
        slot: int,
        global_share: float,
        fresh: np.ndarray,
        also: list[int],
        learn: bool = True,
    ) -> tuple[dict[int, dict[str, WindowTest]], dict[int, WindowTest]]:
        """Every test on one scale's windows (`items`, `negatives`: each key's sums), for every key
        at once; with `learn`, each baseline then learns its window. A negative test flags only
        where the checked part brought a negative (`fresh`): a long window does not keep paging for
        what it already said, so an episode ends once its news stops. Returns the tests of the rows
        where one flagged, and the negative-volume test of the rows in `also`."""
        c = self.config
        baseline = (sc.share_neg + c.share_prior * global_share) / (sc.share_all + c.share_prior)
        share = np.divide(negatives, items, out=np.zeros(len(items)), where=items > 0)
        warm = sc.negatives.seen >= sc.negatives.config.warmup
        if learn:
            expected, flags, p_values = sc.negatives.update(negatives, slot, also=also)
        else:  # only the fresh rows can flag: the others need no tail
            expected, flags, p_values = sc.negatives.test(np.where(fresh, negatives, 0.0), slot)
        volume_row = self.keys.get("all")
        volume = WindowTest(False, 1.0, 0.0, 0.0)
        if volume_row is not None and learn:
            v_expected, v_flags, v_p = sc.volume.update(items[volume_row : volume_row + 1], slot)
            volume = WindowTest(bool(v_flags[0]), v_p.get(0, 1.0), float(items[volume_row]), float(v_expected[0]))
        # The share test: the window's negatives against the key's baseline share (binomial).
        share_flags = np.zeros(len(items), dtype=bool)
        share_tests: dict[int, WindowTest] = {}
        # Early checks leave the share out: a part of a bucket can hold a larger share than the
        # whole will (its count can only grow), and the baseline share is one of whole windows.
        candidates = fresh & warm & (negatives >= c.share_min_negatives) & (share >= 2 * baseline) & learn
        for j in np.flatnonzero(candidates).tolist():
            k, n = math.floor(negatives[j] + 1e-9), max(math.floor(negatives[j] + 1e-9), round(items[j]))
            p = binomial_sf(k, n, float(baseline[j]))
            share_flags[j] = p < c.share_alpha
            share_tests[j] = WindowTest(bool(share_flags[j]), p, float(share[j]), float(baseline[j]))
        if learn:
            # The baseline share learns the window; a flagged window counts at most twice the
            # baseline, so one spike does not become the norm.
            capped = np.where(share_flags, np.minimum(negatives, np.ceil(2 * baseline * items)), negatives)
            sc.share_neg = sc.decay * sc.share_neg + capped
            sc.share_all = sc.decay * sc.share_all + items
        share_up = fresh & (share >= c.volume_share_lift * baseline)

        def negative_volume(i: int) -> WindowTest:
            return WindowTest(
                bool(flags[i] and share_up[i]), p_values.get(i, 1.0), float(negatives[i]), float(expected[i])
            )

        out: dict[int, dict[str, WindowTest]] = {}
        for row in np.flatnonzero(flags & share_up).tolist():
            out[row] = {"negative_volume": negative_volume(row)}
        for row, test in share_tests.items():
            if test.flag:
                out.setdefault(row, {"negative_volume": negative_volume(row)})["negative_share"] = test
        if volume_row is not None and volume.flag:
            out.setdefault(volume_row, {"negative_volume": negative_volume(volume_row)})["volume_burst"] = volume
        return out, {i: negative_volume(i) for i in also}

    def _share(self, key: str) -> float:
        row = self.keys.get(key)
        if row is None:
            return 0.25
        sc = self.scales[0]
        return float((sc.share_neg[row] + 1) / (sc.share_all[row] + 4))

    def _episode(
        self,
        key: str,
        row: int,
        end: datetime,
        flagged: dict[str, Flagged],
        shortest: WindowTest | None,
        current: dict[int, _Bucket],
        shared: int,
    ) -> AlertEvent | None:
        """One episode per key, whatever tests or scales flag it: opened, updated while flagged, ended
        when quiet; `end`: when the check that decides it ends (the bucket's end, or an early point)."""
        episode = self.episodes.get(key)
        if flagged:
            # The headline kind: a negative one if any flagged, then the most significant.
            kind, top = min(flagged.items(), key=lambda kv: (kv[0] == "volume_burst", kv[1].test.p_value, kv[0]))
            _, p, observed, expected = top.test
            ids, window_start = top.ids, top.window_start
            window, buckets = top.window, top.buckets
            status = "opened" if episode is None else "updated"
            since = window_start if episode is None else episode[0]  # the episode began with the window that showed it
            self.episodes[key] = (since, 0)
        elif episode is not None:
            quiet = episode[1] + 1
            if quiet < self.config.end_after:
                self.episodes[key] = (episode[0], quiet)
                return None
            del self.episodes[key]
            since, status, kind = episode[0], "ended", "negative_volume"
            _, p, observed, expected = shortest or WindowTest(False, 1.0, 0.0, 0.0)
            buckets = self.scales[0].scale
            window = self._window(current, row, buckets)
            ids = window.negative_ids[:5]
        else:
            return None
        ratio = observed / expected if expected > 0 else math.inf
        return AlertEvent(
            f"{key}|{since.isoformat()}",
            key,
            kind,
            status,
            severity(p, ratio),
            since,
            end,
            float(observed),
            float(expected),
            round(1 - p, 6),
            tuple(i for _, i in ids),
            tuple(sorted(flagged)),
            shared,
            p_value=p,
            window_minutes=buckets * self.config.bucket.total_seconds() / 60,
            items=round(window.items, 3) if window else 0.0,
            negatives=round(window.negatives, 3) if window else 0.0,
        )

    # --- persistence: the whole state as JSON, so a restart resumes exactly where it was --------
    def snapshot(self) -> dict:
        def t(x: datetime | None) -> str | None:
            return x.isoformat() if x else None

        return {
            "version": 2,
            "watermark": t(self.watermark),
            "next_close": t(self.next_close),
            "late": self.late,
            "closed_any": self.closed_any,
            "sources": {k: t(w) for k, w in self.sources.items()},
            "idle": sorted(self.idle),
            "closed_buckets": self.closed_buckets,
            "early": {"to": t(self.early_to), "flagged": sorted(self.early_flagged)},
            "seen_ids": {i: t(b) for i, b in self.seen_ids.items()},
            "open": {t(start): [e.state() for e in events] for start, events in self.open.items()},
            "last_of_key": {k: t(v) for k, v in self.last_of_key.items()},
            "paged": {k: {i: t(w) for i, w in ids.items()} for k, ids in self.paged.items()},
            "counted": {
                t(start): {k: _bucket_state(b) for k, b in keys.items()} for start, keys in self.counted.items()
            },
            "keys": {
                k: {
                    "scales": [
                        {
                            "negatives": sc.negatives.row_state(row),
                            "share": [float(sc.share_neg[row]), float(sc.share_all[row])],
                            "window": [float(sc.items[row]), float(sc.negative_sum[row])],
                        }
                        for sc in self.scales
                    ],
                    "episodes": {"episode": [t(self.episodes[k][0]), self.episodes[k][1]]}
                    if k in self.episodes
                    else {},
                }
                for k, row in self.keys.items()
            },
            "volume": [sc.volume.row_state(0) for sc in self.scales],
            "recent": [{self.names[r]: _bucket_state(b) for r, b in bucket.items()} for bucket in self.ring],
        }

    @classmethod
    def restore(cls, state: dict, config: TrackerConfig | None = None) -> NewsTracker:
        """A tracker from its snapshot; a snapshot of the previous version (tumbling windows) keeps
        its baselines and episodes, and starts its windows empty."""
        tracker = cls(config)
        parse = datetime.fromisoformat
        tracker.watermark = parse(state["watermark"]) if state["watermark"] else None
        tracker.next_close = parse(state["next_close"]) if state["next_close"] else None
        tracker.late, tracker.closed_any, tracker.closed_buckets = (
            state["late"],
            state["closed_any"],
            state["closed_buckets"],
        )
        tracker.sources = {k: parse(w) if w else None for k, w in state.get("sources", {}).items()}
        tracker.idle = set(state.get("idle", ()))
        early = state.get("early") or {}
        tracker.early_to = parse(early["to"]) if early.get("to") else None
        tracker.early_flagged = set(early.get("flagged", ()))
        tracker.seen_ids = {i: parse(b) for i, b in state["seen_ids"].items()}
        for start, events in state["open"].items():
            if isinstance(events, dict):  # a snapshot of an earlier version: per-key counts, kept as they are
                tracker.counted[parse(start)] = {k: _bucket_from(b) for k, b in events.items()}
                tracker.open.setdefault(parse(start), [])
            else:
                tracker.open[parse(start)] = [ScoredEvent.from_state(e) for e in events]
        tracker.last_of_key = {k: parse(v) for k, v in state.get("last_of_key", {}).items()}
        tracker.paged = {k: {i: parse(w) for i, w in ids.items()} for k, ids in state.get("paged", {}).items()}
        for start, keys in state.get("counted", {}).items():
            tracker.counted[parse(start)] = {k: _bucket_from(b) for k, b in keys.items()}
        current = state.get("version", 1) >= 2
        for k, s in state["keys"].items():
            row = tracker._row(k)
            for sc, saved in zip(tracker.scales, s["scales"]):
                sc.negatives.set_row(row, saved["negatives"])
                sc.share_neg[row], sc.share_all[row] = saved["share"]
                if current:
                    sc.items[row], sc.negative_sum[row] = saved["window"]
            if k == "all" and not current:
                for sc, saved in zip(tracker.scales, s["scales"]):
                    sc.volume.set_row(0, saved["volume"])
            for _, v in s["episodes"].items():
                tracker.episodes[k] = (parse(v[0]), v[1])
        for sc, saved in zip(tracker.scales, state.get("volume", [])):
            sc.volume.set_row(0, saved)
        for bucket in state.get("recent", []):
            tracker.ring.append({tracker._row(k): _bucket_from(b) for k, b in bucket.items()})
        return tracker

    def flush(self, until: datetime) -> list[AlertEvent]:
        """Close every bucket ending at or before `until` (end of a replay, or a clock tick)."""
        self.watermark = max(self.watermark or until, until)
        return self._close_due()
