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

Three tests per key on each closed bucket, each a :class:`CountSpike` or a binomial test:
negative volume, negative share (against the key's own baseline share), overall volume burst.
An episode is one alert per key (``opened``, whichever tests flag it), ``updated`` while buckets
keep flagging and ``ended`` after ``end_after`` quiet buckets: the quiet period is the cooldown.
Alert id = key + the bucket the episode opened in, so a replay produces the same ids and the
outbox refuses to write or send one twice.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

from monitor.detection.counts import CountSpike, CountSpikeConfig
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
    counts: CountSpikeConfig = field(
        default_factory=lambda: CountSpikeConfig(min_count=3, seasonal_period=24, warmup=4 * 24, halflife=4 * 24 * 3)
    )
    # Windows of 1, 4 and 16 buckets (15 min, 1 h, 4 h): a burst shows in the short one, a slow
    # build-up only in the long ones. Each scale has its own baseline; any of them can open an episode.
    scales: tuple[int, ...] = (1, 4, 16)

    def counts_for(self, scale: int) -> CountSpikeConfig:
        c = self.counts
        return replace(c, warmup=max(8, c.warmup // scale), halflife=max(8.0, c.halflife / scale))


@dataclass
class _Bucket:
    items: int = 0
    negatives: int = 0
    mass: float = 0.0
    negative_ids: list[tuple[float, str]] = field(default_factory=list)  # (p_bearish, id); top 5 in windows
    all_negative_ids: list[str] = field(default_factory=list)  # in windows: every negative id


@dataclass
class _Scale:
    """One window length of one key: its baselines and the window being filled."""

    negatives: CountSpike
    volume: CountSpike
    share_neg: float = 0.0  # decayed negative count
    share_all: float = 0.0  # decayed item count
    window: _Bucket = field(default_factory=_Bucket)


@dataclass
class _KeyState:
    scales: list[_Scale]
    episodes: dict[str, tuple[datetime, int]] = field(
        default_factory=dict
    )  # "episode" -> (opened bucket, quiet buckets)


def _bucket_state(b: _Bucket) -> list:
    return [b.items, b.negatives, b.mass, [list(x) for x in b.negative_ids], list(b.all_negative_ids)]


def _bucket_from(state: list) -> _Bucket:
    items, negatives, mass, ids, all_ids = state
    return _Bucket(items, negatives, mass, [tuple(x) for x in ids], list(all_ids))


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
        self.keys: dict[str, _KeyState] = {}
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
        return alerts

    def _count(self, events: list[ScoredEvent], counted: dict[str, _Bucket] | None = None) -> dict[str, _Bucket]:
        """A closing bucket's items counted per key, in (event time, id) order; an item is a
        near-duplicate (not counted) when an earlier item with its dedup key lies within the window,
        as the scoring stage flags it when items come in order (here: whatever order they came in).
        `counted`: what an earlier version's snapshot had already counted in this bucket."""
        buckets: dict[str, _Bucket] = defaultdict(_Bucket, counted or {})
        window = self.config.dedup_window
        for event in sorted(events, key=lambda e: (e.published_at, e.id)):
            if event.dedup_key is not None:
                last = self.last_of_key.get(event.dedup_key)
                self.last_of_key[event.dedup_key] = event.published_at
                if last is not None and event.published_at - last <= window:
                    continue
            for key in self.keys_of(event):
                bucket = buckets[key]
                bucket.items += 1
                if event.negative:
                    bucket.negatives += 1
                    bucket.negative_ids.append((event.p_bearish, event.id))
                bucket.mass += event.p_bearish
        return buckets

    def _state(self, key: str) -> _KeyState:
        if key not in self.keys:
            # A key seen for the first time had zero items in every window closed so far.
            scales = []
            for scale in self.config.scales:
                config = self.config.counts_for(scale)
                negatives, volume = CountSpike(config), CountSpike(config)
                negatives.seen = volume.seen = self.closed_buckets // scale
                scales.append(_Scale(negatives, volume))
            self.keys[key] = _KeyState(scales)
        return self.keys[key]

    def _close(self, start: datetime, buckets: dict[str, _Bucket]) -> list[AlertEvent]:
        for key in buckets:
            self._state(key)
        index = self.closed_buckets  # this bucket's number since the tracker started
        global_share = self._share("all")
        alerts = []
        # Tickers first: negatives that flagged tickers explain do not page again for the topic or
        # the whole market (one company's bad day is one alert, not three).
        explained: dict[int, set[str]] = defaultdict(set)  # scale -> negative item ids of flagged tickers
        order = sorted(self.keys.items(), key=lambda kv: (not kv[0].startswith("ticker:"), kv[0]))
        for key, state in order:
            b = buckets.get(key, _Bucket())
            flagged: dict[str, Flagged] = {}
            shortest: tuple[WindowTest, _Bucket] | None = None  # the shortest window's negative test
            for scale, sc in zip(self.config.scales, state.scales):
                w = sc.window
                w.items, w.negatives, w.mass = w.items + b.items, w.negatives + b.negatives, w.mass + b.mass
                w.negative_ids = sorted(w.negative_ids + b.negative_ids, key=lambda x: (-x[0], x[1]))[:5]
                w.all_negative_ids = w.all_negative_ids + [i for _, i in b.negative_ids]
                if (index + 1) % scale:
                    continue  # this scale's window is not complete yet
                window_start = start - (scale - 1) * self.config.bucket
                tests = self._window_tests(sc, w, window_start.hour, global_share)
                shortest = shortest or (tests["negative_volume"], w)
                if key != "all":  # a volume burst is an alert for the news flow overall, not per key
                    tests["volume_burst"] = tests["volume_burst"]._replace(flag=False)
                if key.startswith("ticker:"):
                    # A ticker that flags now, or whose episode is still open, explains its negatives
                    # (the story goes on after its first window: still one alert, not one per topic).
                    if any(t.flag for k, t in tests.items() if k != "volume_burst") or "episode" in state.episodes:
                        explained[scale].update(w.all_negative_ids)
                elif len(explained[scale] & set(w.all_negative_ids)) * 2 >= max(1, w.negatives):
                    tests = {k: t._replace(flag=False) for k, t in tests.items()}  # mostly one ticker's story
                for kind, test in tests.items():
                    if test.flag and (kind not in flagged or test.p_value < flagged[kind].test.p_value):
                        flagged[kind] = Flagged(test, w.negative_ids, window_start)
                sc.window = _Bucket()
            alert = self._episode(key, state, start, flagged, shortest)
            if alert is not None:
                alerts.append(alert)
        return alerts

    def _window_tests(self, sc: _Scale, w: _Bucket, slot: int, global_share: float) -> dict[str, WindowTest]:
        """Every test on one completed window; each baseline then learns the window."""
        baseline_share = self._baseline_share(sc, global_share)
        neg, vol = sc.negatives.update(w.negatives, slot), sc.volume.update(w.items, slot)
        share_up = w.items > 0 and w.negatives / w.items >= self.config.volume_share_lift * baseline_share
        share = self._share_test(sc, w, global_share)
        self._learn_share(sc, w, share)
        return {
            "negative_volume": WindowTest(neg.flag and share_up, neg.p_value, neg.count, neg.expected),
            "volume_burst": WindowTest(vol.flag, vol.p_value, vol.count, vol.expected),
            "negative_share": share,
        }

    def _baseline_share(self, sc: _Scale, global_share: float) -> float:
        prior = self.config.share_prior
        return (sc.share_neg + prior * global_share) / (sc.share_all + prior)

    def _share(self, key: str) -> float:
        s = self.keys.get(key)
        return (s.scales[0].share_neg + 1) / (s.scales[0].share_all + 4) if s else 0.25

    def _share_test(self, state: _Scale, b: _Bucket, global_share: float) -> WindowTest:
        """The window's negative share against the key's baseline share (a binomial test)."""
        c = self.config
        baseline = self._baseline_share(state, global_share)
        p = binomial_sf(b.negatives, b.items, baseline) if b.items else 1.0
        warm = state.negatives.seen > state.negatives.config.warmup
        share = b.negatives / b.items if b.items else 0.0
        flag = warm and p < c.share_alpha and b.negatives >= c.share_min_negatives and share >= 2 * baseline
        return WindowTest(flag, p, share, baseline)

    @staticmethod
    def _learn_share(state: _Scale, b: _Bucket, test: WindowTest) -> None:
        """The baseline share learns the window; a flagged window counts at most twice the baseline,
        so one spike does not become the norm."""
        decay = 0.5 ** (1 / state.negatives.config.halflife)
        capped = min(b.negatives, math.ceil(2 * test.expected * b.items)) if test.flag else b.negatives
        state.share_neg = decay * state.share_neg + capped
        state.share_all = decay * state.share_all + b.items

    def _episode(
        self, key: str, state: _KeyState, start: datetime, flagged: dict[str, Flagged], shortest
    ) -> AlertEvent | None:
        """One episode per key, whatever tests or scales flag it: opened, updated while flagged, ended when quiet."""
        end = start + self.config.bucket
        episode = state.episodes.get("episode")
        if flagged:
            # The headline kind: a negative one if any flagged, then the most significant.
            kind, top = min(flagged.items(), key=lambda kv: (kv[0] == "volume_burst", kv[1].test.p_value, kv[0]))
            _, p, observed, expected = top.test
            ids, window_start = top.ids, top.window_start
            status = "opened" if episode is None else "updated"
            since = window_start if episode is None else episode[0]  # the episode began with the window that showed it
            state.episodes["episode"] = (since, 0)
        elif episode is not None:
            quiet = episode[1] + 1
            if quiet < self.config.end_after:
                state.episodes["episode"] = (episode[0], quiet)
                return None
            del state.episodes["episode"]
            since, status, kind = episode[0], "ended", "negative_volume"
            (_, p, observed, expected), window = shortest
            ids = window.negative_ids
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
        )

    # --- persistence: the whole state as JSON, so a restart resumes exactly where it was --------
    def snapshot(self) -> dict:
        def t(x: datetime | None) -> str | None:
            return x.isoformat() if x else None

        return {
            "watermark": t(self.watermark),
            "next_close": t(self.next_close),
            "late": self.late,
            "closed_any": self.closed_any,
            "sources": {k: t(w) for k, w in self.sources.items()},
            "idle": sorted(self.idle),
            "closed_buckets": self.closed_buckets,
            "seen_ids": {i: t(b) for i, b in self.seen_ids.items()},
            "open": {t(start): [e.state() for e in events] for start, events in self.open.items()},
            "last_of_key": {k: t(v) for k, v in self.last_of_key.items()},
            "counted": {
                t(start): {k: _bucket_state(b) for k, b in keys.items()} for start, keys in self.counted.items()
            },
            "keys": {
                k: {
                    "scales": [
                        {
                            "negatives": sc.negatives.snapshot(),
                            "volume": sc.volume.snapshot(),
                            "share": [sc.share_neg, sc.share_all],
                            "window": _bucket_state(sc.window),
                        }
                        for sc in s.scales
                    ],
                    "episodes": {kind: [t(v[0]), v[1]] for kind, v in s.episodes.items()},
                }
                for k, s in self.keys.items()
            },
        }

    @classmethod
    def restore(cls, state: dict, config: TrackerConfig | None = None) -> NewsTracker:
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
        tracker.seen_ids = {i: parse(b) for i, b in state["seen_ids"].items()}
        for start, events in state["open"].items():
            if isinstance(events, dict):  # a snapshot of an earlier version: per-key counts, kept as they are
                tracker.counted[parse(start)] = {k: _bucket_from(b) for k, b in events.items()}
                tracker.open.setdefault(parse(start), [])
            else:
                tracker.open[parse(start)] = [ScoredEvent.from_state(e) for e in events]
        tracker.last_of_key = {k: parse(v) for k, v in state.get("last_of_key", {}).items()}
        for start, keys in state.get("counted", {}).items():
            tracker.counted[parse(start)] = {k: _bucket_from(b) for k, b in keys.items()}
        for k, s in state["keys"].items():
            scales = []
            for scale, sc in zip(tracker.config.scales, s["scales"]):
                counts = tracker.config.counts_for(scale)
                scales.append(
                    _Scale(
                        CountSpike.restore(counts, sc["negatives"]),
                        CountSpike.restore(counts, sc["volume"]),
                        sc["share"][0],
                        sc["share"][1],
                        _bucket_from(sc["window"]),
                    )
                )
            tracker.keys[k] = _KeyState(scales, {kind: (parse(v[0]), v[1]) for kind, v in s["episodes"].items()})
        return tracker

    def flush(self, until: datetime) -> list[AlertEvent]:
        """Close every bucket ending at or before `until` (end of a replay, or a clock tick)."""
        self.watermark = max(self.watermark or until, until)
        return self._close_due()
