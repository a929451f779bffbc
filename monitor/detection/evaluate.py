"""`bearwatch detect evaluate`: the tracker scored against synthetic streams with planted episodes.

Background: tickers of very different volume (busy, medium, quiet), a daily cycle (busy in market
hours), a base negative share, neutral news bursts (earnings days: many items, normal share) and
market-wide busy hours. Planted negative episodes on random tickers, three shapes (spike: a burst
within half an hour; ramp: negatives growing over three hours; sustained: a doubled-plus negative
share over six hours) and three sizes. An episode counts as detected when an alert whose tests
include a negative one opens on its key with a window overlapping the episode (or the hour after
it); delay is from the episode's start to the end of the bucket that raised the alert (when it
could be sent).
Any other alert with a negative test on a ticker is a false alarm.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone

from monitor.detection.tracker import NewsTracker, TrackerConfig
from monitor.records import AlertEvent, ScoredEvent

START = datetime(2026, 1, 5, tzinfo=timezone.utc)  # a Monday
NEGATIVE_KINDS = {"negative_volume", "negative_share"}
SHAPES = ("spike", "ramp", "sustained")
SIZES = {"small": 0.6, "medium": 1.0, "large": 2.0}


@dataclass(frozen=True)
class Episode:
    ticker: str
    start: datetime
    end: datetime
    shape: str
    size: str


def poisson_sample(rng: random.Random, lam: float) -> int:
    """A Poisson draw from a seeded generator (Knuth; a normal approximation for large means)."""
    if lam <= 0:
        return 0
    if lam > 50:
        return max(0, round(rng.gauss(lam, lam**0.5)))
    k, p, threshold = 0, 1.0, math.exp(-lam)
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def synthetic_stream(
    seed: int, days: int = 14, tickers: int = 30, episodes: int = 8
) -> tuple[list[ScoredEvent], list[Episode]]:
    rng = random.Random(seed)
    names = [f"T{i:02d}" for i in range(tickers)]
    rates = {t: rng.choice([2.0, 0.6, 0.6, 0.15, 0.15, 0.04]) for t in names}  # items per hour in market hours
    base_share = 0.15
    events: list[ScoredEvent] = []
    n = 0

    def emit(t: datetime, ticker: str | None, negative: bool) -> None:
        nonlocal n
        n += 1
        events.append(
            ScoredEvent(
                f"s{seed}-{n}",
                t,
                negative,
                0.9 if negative else rng.uniform(0.01, 0.3),
                rng.choice(["Earnings", "Company | Product News", "Analyst Update", "Macro"]),
                (ticker,) if ticker else (),
            )
        )

    earnings_days = {t: START + timedelta(days=rng.randrange(days)) for t in names if rng.random() < 0.5}
    for hour in range(days * 24):
        t0 = START + timedelta(hours=hour)
        local = (hour - 5) % 24
        weekday = t0.weekday() < 5
        cycle = (1.0 if 8 <= local < 17 else 0.2) * (1.0 if weekday else 0.3)
        for ticker, rate in rates.items():
            boost = (
                5.0
                if ticker in earnings_days and earnings_days[ticker].date() == t0.date() and 8 <= local < 17
                else 1.0
            )
            for _ in range(poisson_sample(rng, rate * cycle * boost)):
                emit(t0 + timedelta(seconds=rng.randrange(3600)), ticker, rng.random() < base_share)
        for _ in range(poisson_sample(rng, 8 * cycle)):  # market-wide news without tickers
            emit(t0 + timedelta(seconds=rng.randrange(3600)), None, rng.random() < base_share)

    planted = []
    for i in range(episodes):
        ticker = rng.choice(names)
        shape, size = SHAPES[i % 3], rng.choice(list(SIZES))
        start = START + timedelta(days=3 + rng.random() * (days - 4))
        scale = SIZES[size]
        if shape == "spike":
            duration, count = timedelta(minutes=30), round(8 * scale)
            times = [start + timedelta(seconds=rng.randrange(1800)) for _ in range(count)]
        elif shape == "ramp":
            duration = timedelta(hours=3)
            times = [start + timedelta(minutes=m) for m in range(0, 180, 4) if rng.random() < (m / 180) * scale * 0.8]
        else:
            duration = timedelta(hours=6)
            times = [start + timedelta(minutes=rng.randrange(360)) for _ in range(round(12 * scale))]
            for _ in range(round(6 * scale)):  # with some ordinary news in between
                emit(start + timedelta(minutes=rng.randrange(360)), ticker, False)
        for t in times:
            emit(t, ticker, True)
        planted.append(Episode(ticker, start, start + duration, shape, size))
    events.sort(key=lambda e: (e.published_at, e.id))
    return events, planted


def negative_ticker_alerts(events: Sequence[ScoredEvent], config: TrackerConfig | None = None) -> list[AlertEvent]:
    """The openings of ticker episodes with a negative test, as the daemon would raise them from
    these events (in event-time order), with enough quiet time after the last one to close it."""
    tracker = NewsTracker(config)
    opened: list[AlertEvent] = []
    for e in events:
        opened += [a for a in tracker.add(e) if a.status == "opened"]
    if events:
        opened += [a for a in tracker.flush(events[-1].published_at + timedelta(hours=6)) if a.status == "opened"]
    return [a for a in opened if a.key.startswith("ticker:") and set(a.kinds) & NEGATIVE_KINDS]


@dataclass
class Score:
    episodes: int = 0
    detected: int = 0
    alerts: int = 0
    false_alarms: int = 0
    delays_min: list[float] = field(default_factory=list)
    key_weeks: float = 0.0
    by_shape: dict = field(default_factory=dict)
    delays_by_shape: dict = field(default_factory=lambda: {s: [] for s in SHAPES})


def evaluate(seed: int, config: TrackerConfig | None = None, days: int = 14) -> Score:
    events, planted = synthetic_stream(seed, days=days)
    negative = negative_ticker_alerts(events, config)
    score = Score(episodes=len(planted), alerts=len(negative), delays_min=[], by_shape={s: [0, 0] for s in SHAPES})
    matched: set[str] = set()
    for ep in planted:
        score.by_shape[ep.shape][1] += 1
        hits = [
            a
            for a in negative
            if a.key == f"ticker:{ep.ticker}"
            and a.window_start <= ep.end + timedelta(hours=1)
            and a.window_end >= ep.start
        ]
        if hits:
            first = min(hits, key=lambda a: a.window_end)  # the first page that matched it
            matched.update(a.id for a in hits)
            score.detected += 1
            score.by_shape[ep.shape][0] += 1
            delay = max(0.0, (first.window_end - ep.start).total_seconds() / 60)
            score.delays_min.append(delay)
            score.delays_by_shape[ep.shape].append(delay)
    score.false_alarms = len([a for a in negative if a.id not in matched])
    tickers = {k for e in events for k in e.tickers}
    score.key_weeks = len(tickers) * days / 7
    return score


def summary(seeds: list[int], config: TrackerConfig | None = None) -> dict:
    scores = [evaluate(s, config) for s in seeds]
    episodes = sum(s.episodes for s in scores)
    detected = sum(s.detected for s in scores)
    alerts = sum(s.alerts for s in scores)
    false_alarms = sum(s.false_alarms for s in scores)
    delays = [d for s in scores for d in s.delays_min]
    by_shape = {
        shape: [sum(s.by_shape[shape][0] for s in scores), sum(s.by_shape[shape][1] for s in scores)]
        for shape in SHAPES
    }
    return {
        "seeds": len(seeds),
        "episodes": episodes,
        "recall": detected / episodes if episodes else 0.0,
        "precision": (alerts - false_alarms) / alerts if alerts else 0.0,
        "false_alarms_per_key_week": false_alarms / sum(s.key_weeks for s in scores),
        "delay_minutes_median": statistics.median(delays) if delays else None,
        "delay_minutes_p90": sorted(delays)[int(0.9 * (len(delays) - 1))] if delays else None,
        "recall_by_shape": {k: (v[0] / v[1] if v[1] else None) for k, v in by_shape.items()},
        "delay_minutes_median_by_shape": {
            shape: statistics.median(d) if (d := [x for s in scores for x in s.delays_by_shape[shape]]) else None
            for shape in SHAPES
        },
    }


def candidates() -> dict[str, TrackerConfig]:
    """The configurations compared when choosing the default (the first is the default), on the
    synthetic streams and on the real StockNet suite alike."""
    base = TrackerConfig()
    counts = base.counts

    def alpha(a: float) -> TrackerConfig:
        return replace(base, counts=replace(counts, alpha=a), share_alpha=a)

    return {
        "default: 15m-24h, a 1e-3, early, conf 0.85, paged": base,
        "no early checks (bucket closes only)": replace(base, early=None),
        "no confidence floor": replace(base, min_confidence=0.0),
        "confidence >= 0.85 over the top 5": replace(base, confidence_top=5),
        "confidence >= 0.9": replace(base, min_confidence=0.9),
        "windows 15m/1h/4h (no 24h)": replace(base, scales=(1, 4, 16)),
        "windows 15m/1h": replace(base, scales=(1, 4)),
        "alpha 3e-4": alpha(3e-4),
        "alpha 5e-4": alpha(5e-4),
        "alpha 2e-3": alpha(2e-3),
        "alpha 3e-3": alpha(3e-3),
        "alpha 1e-2": alpha(1e-2),
        "over-dispersion floor r >= 0.5": replace(base, counts=replace(counts, min_size=0.5)),
        "min 4 negatives": replace(base, counts=replace(counts, min_count=4), share_min_negatives=4),
        "multi-ticker items count fully": replace(base, shared_tickers=1000),
        "no paged memory (a story may page again)": replace(base, paged_memory=None),
    }


def format_table(rows: dict[str, dict]) -> str:
    head = (
        f"{'configuration':<44}{'recall':>8}{'precision':>11}{'FA/key/wk':>11}{'delay p50':>11}{'p90':>7}"
        f"{'burst p50':>11}   recall spike/ramp/sustained"
    )
    lines = [head]
    for name, r in rows.items():
        shapes = "/".join(f"{v:.2f}" for v in r["recall_by_shape"].values())
        lines.append(
            f"{name:<44}{r['recall']:>8.2f}{r['precision']:>11.2f}{r['false_alarms_per_key_week']:>11.3f}"
            f"{r['delay_minutes_median'] or 0:>10.0f}m{r['delay_minutes_p90'] or 0:>6.0f}m"
            f"{r['delay_minutes_median_by_shape']['spike'] or 0:>10.0f}m   {shapes}"
        )
    return "\n".join(lines)
