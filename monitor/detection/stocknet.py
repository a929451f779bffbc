"""The real-data suite of `bearwatch detect evaluate`: the StockNet tweet stream against the real
price moves of its 87 tickers (Xu & Cohen 2018, MIT; both in the shared data folder).

Ground truth, from prices alone (no text involved): a **negative event** is a ticker-day whose
close-to-close return minus the cross-section median return of that day is ≤ −4 % and ≤ −3 standard
deviations of that ticker's own such residuals (its usual day-to-day noise). News about it should
show in the ticker's tweets on the *relevant span*, "on the day or the evening before": from the
previous trading day's close (16:00 New York) to the end of the event day (midnight New York). An
event is *covered* when that span holds at least ``min_tweets`` distinct tweets filed under the
ticker (5 by default): below that, no count detector can see it.

An alert (a ticker-level alert with a negative test, `opened`) is **relevant** when it is raised
(the end of the bucket that opened it) inside an event's span of the same ticker.
Precision = relevant alerts / alerts; recall = covered events with a relevant alert / covered events;
delay = from the event's first negative tweet in its span to the end of the bucket that raised the
alert (when it could be sent). Alerts per ticker-week say how loud the channel is. Beside them, the
alert days (distinct ticker and New York date with an alert) and their precision (those with a
relevant alert / all): one story paged again and again counts once there, on a real bad day or not.

The stream is scored once with the serving model (the same validation, text and dedup keys as the
scoring stage; the model's argmax decides `negative`) and cached per model version, so that the
detector's comparisons take a minute each. Two naive baselines in the same run: per ticker and day,
the day's negative count (every scored item, copies included) against the mean + 3 standard
deviations of that ticker's previous 30 days, at least 3, raised when the day ends; days are
calendar days (UTC), or trading sessions (from one close to the next: a rule that knows the
market's calendar and so is never late for the close).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import statistics
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from monitor.detection.evaluate import negative_ticker_alerts
from monitor.detection.tracker import TrackerConfig
from monitor.progress import Progress
from monitor.records import ScoredEvent

NEW_YORK = ZoneInfo("America/New_York")
SCORED_FORMAT = 1  # bump when the cached fields change


# --- the stream ---------------------------------------------------------------------------------
def stream_items(path: str | Path, limit: int | None = None) -> list[dict]:
    """StockNet's tweet CSV as news items: one per distinct tweet, with every ticker it was filed
    under, in the stream's own order (by created_at)."""
    items: dict[str, dict] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            key = row["tweet_id"]
            if key in items:
                if row["ticker"] not in items[key]["tickers"]:
                    items[key]["tickers"].append(row["ticker"])
                continue
            if limit is not None and len(items) >= limit:
                break
            items[key] = {
                "id": f"stocknet-{key}",
                "published_at": row["created_at"],
                "headline": row["text"],
                "tickers": [row["ticker"]],
                "source": "stocknet",
                "lang": row["lang"] or None,
            }
    return [{k: v for k, v in item.items() if v is not None} for item in items.values()]


def _digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=8)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def score_stream(
    tweets: str | Path, model: str | Path | None = None, cache_dir: str | Path | None = None, progress=None
) -> list[ScoredEvent]:
    """Every item of the stream as the detector sees it (scored topic record), cached per model
    version and input file: the first run scores ~97k tweets (minutes on a laptop), later ones read
    the cache."""
    from monitor.model_artifact import ModelArtifact
    from monitor.resources import shipped_model
    from monitor.schema import parse_item
    from monitor.scoring.onnx import OnnxScorer
    from monitor.text import dedup_key

    tweets = Path(tweets)
    artifact = ModelArtifact.load(Path(model) if model else shipped_model())
    cache = Path(cache_dir or Path.home() / ".cache" / "bearwatch") / (
        f"stocknet-scored-v{SCORED_FORMAT}-{artifact.version}-{_digest(tweets)}.jsonl.gz"
    )
    if cache.exists():
        with gzip.open(cache, "rt", encoding="utf-8") as fh:
            return [_from_cached(json.loads(line)) for line in fh if line.strip()]
    scorer = OnnxScorer.load(artifact)
    items = [parse_item(json.dumps(raw).encode()) for raw in stream_items(tweets)]
    events: list[ScoredEvent] = []
    batch = 256
    for start in range(0, len(items), batch):
        part = items[start : start + batch]
        scores = scorer.score_texts([i.text for i in part])
        sentiment = scores.probabilities["sentiment"]
        topics = scores.predicted("topic")
        labels = scores.labels["sentiment"]
        bearish = labels.index("bearish")
        for j, item in enumerate(part):
            events.append(
                ScoredEvent(
                    id=item.id,
                    published_at=item.published_at,
                    negative=int(sentiment[j].argmax()) == bearish,
                    p_bearish=round(float(sentiment[j][bearish]), 6),
                    topic=topics[j],
                    tickers=item.tickers,
                    dedup_key=dedup_key(item.headline),
                    headline=item.headline,
                )
            )
        if progress:
            progress(len(events), len(items))
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    with gzip.open(partial, "wt", encoding="utf-8") as fh:
        for e in events:
            fh.write(json.dumps([*e.state(), e.headline], ensure_ascii=False) + "\n")
    partial.replace(cache)
    return events


def _from_cached(row: list) -> ScoredEvent:
    return replace(ScoredEvent.from_state(row[:7]), headline=row[7])


# --- the ground truth ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Event:
    """A ticker's real bad day, from prices: the span its news should show in."""

    ticker: str
    day: date
    residual: float  # the day's return minus the market's (cross-section median)
    span_start: datetime  # the previous trading day's close
    span_end: datetime  # the end of the day (midnight, New York)
    tweets: int = 0  # distinct tweets filed under the ticker in the span
    first_negative: datetime | None = None  # the span's first negative tweet


def _close(day: date) -> datetime:
    return datetime.combine(day, time(16), NEW_YORK).astimezone(timezone.utc)


def _day_end(day: date) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(), NEW_YORK).astimezone(timezone.utc)


def price_events(path: str | Path, drop: float = 0.04, sigmas: float = 3.0, rises: bool = False) -> list[Event]:
    """Ticker-days that fell ≥ `drop` more than the market and ≥ `sigmas` of the ticker's own
    residuals; with `rises`, the days that rose as far too (what moves a ticker's news volume)."""
    closes: dict[str, list[tuple[date, float]]] = defaultdict(list)
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                closes[row["ticker"]].append((date.fromisoformat(row["date"]), float(row["adj_close"])))
            except ValueError:
                continue  # a malformed row of the published file: no price, no event
    returns: dict[date, dict[str, float]] = defaultdict(dict)
    previous: dict[tuple[str, date], date] = {}
    for ticker, rows in closes.items():
        rows.sort()
        for (d0, c0), (d1, c1) in zip(rows, rows[1:]):
            if c0 > 0:
                returns[d1][ticker] = c1 / c0 - 1
                previous[(ticker, d1)] = d0
    residuals: dict[str, list[tuple[date, float]]] = defaultdict(list)
    for day, by_ticker in returns.items():
        market = statistics.median(by_ticker.values())
        for ticker, r in by_ticker.items():
            residuals[ticker].append((day, r - market))
    events = []
    for ticker, rows in residuals.items():
        sd = statistics.pstdev([r for _, r in rows]) if len(rows) > 1 else math.inf
        for day, r in rows:
            size = abs(r) if rises else -r
            if size >= drop and size >= sigmas * sd:
                events.append(Event(ticker, day, r, _close(previous[(ticker, day)]), _day_end(day)))
    return sorted(events, key=lambda e: (e.day, e.ticker))


def with_tweets(events: Sequence[Event], stream: Sequence[ScoredEvent]) -> list[Event]:
    """Each event with its span's tweet count and first negative tweet."""
    by_ticker: dict[str, list[ScoredEvent]] = defaultdict(list)
    for e in stream:
        for t in e.tickers:
            by_ticker[t].append(e)
    out = []
    for ev in events:
        inside = [e for e in by_ticker.get(ev.ticker, ()) if ev.span_start < e.published_at <= ev.span_end]
        negatives = [e.published_at for e in inside if e.negative]
        out.append(replace(ev, tweets=len(inside), first_negative=min(negatives, default=None)))
    return out


def _by_ticker(events: Sequence[Event]) -> dict[str, list[Event]]:
    by_ticker: dict[str, list[Event]] = defaultdict(list)
    for ev in events:
        by_ticker[ev.ticker].append(ev)
    return by_ticker


def _spanning(by_ticker: Mapping[str, Sequence[Event]], tickers: Sequence[str], at: datetime) -> list[Event]:
    """The events of these tickers whose span holds the moment `at` (after its start, up to its end)."""
    return [ev for t in tickers for ev in by_ticker.get(t, ()) if ev.span_start < at <= ev.span_end]


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if not n:
        return (0.0, 0.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(centre - half, 4), round(centre + half, 4))


def call_relevance(stream: Sequence[ScoredEvent], events: Sequence[Event]) -> dict:
    """The model's bearish calls on the real stream against the price moves, with no detector in
    between: how many tweets it calls bearish, what share of them fall in a negative event's span
    of a ticker they name (with a 95% Wilson interval, and its lift over the share of all tweets
    that do), and what share of the tweets in those spans it calls bearish. Real tweets carry no
    label, so this is a proxy of bearish precision and recall (a bad day's span also holds neutral
    news, and bad news under the 4% line is outside every span), but it is the same proxy for any
    model, on the stream the daemon sees."""
    by_ticker = _by_ticker(events)
    tweets = len(stream)
    flags = [(e.negative, bool(_spanning(by_ticker, e.tickers, e.published_at))) for e in stream]
    called = sum(neg for neg, _ in flags)
    in_span = sum(ins for _, ins in flags)
    called_in_span = sum(neg and ins for neg, ins in flags)
    precision = called_in_span / called if called else 0.0
    base = in_span / tweets if tweets else 0.0
    return {
        "tweets": tweets,
        "called_bearish": called,
        "share_called_bearish": round(called / tweets, 4) if tweets else 0.0,
        "tweets_in_event_spans": in_span,
        "bearish_calls_in_event_spans": called_in_span,
        "span_precision": round(precision, 4),
        "span_precision_95": _wilson(called_in_span, called),
        "lift": round(precision / base, 3) if base else None,
        "span_recall": round(called_in_span / in_span, 4) if in_span else 0.0,
        "span_recall_95": _wilson(called_in_span, in_span),
    }


def format_calls(version: str, calls: dict) -> str:
    lo, hi = calls["span_precision_95"]
    rlo, rhi = calls["span_recall_95"]
    return (
        f"model {version} calls {calls['called_bearish']:,} of {calls['tweets']:,} tweets bearish "
        f"({100 * calls['share_called_bearish']:.1f} %): {100 * calls['span_precision']:.2f} % [{100 * lo:.2f}, "
        f"{100 * hi:.2f}] of them fall in a negative price event's span of a ticker they name ({calls['lift']}x the "
        f"share of all tweets); it calls {100 * calls['span_recall']:.1f} % [{100 * rlo:.1f}, {100 * rhi:.1f}] of the "
        f"{calls['tweets_in_event_spans']:,} tweets in those spans bearish"
    )


# --- alerts and their score ---------------------------------------------------------------------
@dataclass(frozen=True)
class Raised:
    """A ticker-level negative alert: when it could be sent, and the window that raised it."""

    ticker: str
    at: datetime
    window_start: datetime


def tracker_alerts(stream: Sequence[ScoredEvent], config: TrackerConfig | None = None) -> list[Raised]:
    """The detector's opened ticker alerts with a negative test, as the daemon would raise them."""
    return [
        Raised(a.key.removeprefix("ticker:"), a.window_end, a.window_start)
        for a in negative_ticker_alerts(stream, config)
    ]


def trading_closes(prices: str | Path) -> list[datetime]:
    with open(prices, encoding="utf-8", newline="") as fh:
        days = {row["date"] for row in csv.DictReader(fh)}
    return sorted(_close(date.fromisoformat(d)) for d in days)


def calendar_days(stream: Sequence[ScoredEvent]) -> list[datetime]:
    """The ends (midnight UTC) of every calendar day the stream spans."""
    first = datetime.combine(stream[0].published_at.date(), time(), timezone.utc)
    days = (stream[-1].published_at - first).days + 2
    return [first + timedelta(days=i) for i in range(1, days)]


def naive_alerts(
    stream: Sequence[ScoredEvent], closes: Sequence[datetime], history: int = 30, sigmas: float = 3.0, minimum: int = 3
) -> list[Raised]:
    """Per ticker and day (`closes`: each day's end; calendar days, or trading sessions from one
    close to the next): the day's negatives against the mean + 3 standard deviations of the
    previous 30 days, at least 3; raised when the day ends."""
    import bisect

    counts: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for e in stream:
        if e.negative:
            day = bisect.bisect_left(closes, e.published_at)
            if day < len(closes):
                for t in e.tickers:
                    counts[t][day] += 1
    raised = []
    for ticker, by_day in counts.items():
        for day in range(history, len(closes)):
            n = by_day.get(day, 0)
            if n < minimum:
                continue
            past = [by_day.get(d, 0) for d in range(day - history, day)]
            if n > statistics.fmean(past) + sigmas * statistics.pstdev(past):
                raised.append(Raised(ticker, closes[day], closes[day - 1]))
    return sorted(raised, key=lambda r: (r.at, r.ticker))


@dataclass
class SuiteScore:
    alerts: int = 0
    relevant: int = 0
    covered: int = 0
    detected: int = 0
    delays_min: list[float] = field(default_factory=list)
    ticker_weeks: float = 1.0
    alert_days: int = 0  # distinct (ticker, New York date) with an alert: one story's repeated pages count once
    relevant_days: int = 0

    @property
    def precision(self) -> float:
        return self.relevant / self.alerts if self.alerts else 0.0

    @property
    def recall(self) -> float:
        return self.detected / self.covered if self.covered else 0.0

    def as_dict(self) -> dict:
        d = self.delays_min
        return {
            "alerts": self.alerts,
            "relevant": self.relevant,
            "precision": round(self.precision, 3),
            "covered_events": self.covered,
            "detected": self.detected,
            "recall": round(self.recall, 3),
            "alerts_per_ticker_week": round(self.alerts / self.ticker_weeks, 4),
            "alert_days": self.alert_days,
            "day_precision": round(self.relevant_days / self.alert_days, 3) if self.alert_days else 0.0,
            "delay_minutes_median": round(statistics.median(d)) if d else None,
            "delay_minutes_p90": round(sorted(d)[int(0.9 * (len(d) - 1))]) if d else None,
        }


def score(
    raised: Sequence[Raised],
    events: Sequence[Event],
    tickers: int,
    weeks: float,
    min_tweets: int = 5,
    period: tuple[datetime, datetime] | None = None,
) -> SuiteScore:
    """Precision of the alerts against every event, recall of the covered events, delay, loudness;
    `period`: only alerts raised and events ending inside it."""
    if period:
        raised = [r for r in raised if period[0] <= r.at < period[1]]
        events = [e for e in events if period[0] <= e.span_end < period[1]]
    by_ticker = _by_ticker(events)
    s = SuiteScore(alerts=len(raised), ticker_weeks=max(1e-9, tickers * weeks))
    hits: dict[Event, list[Raised]] = defaultdict(list)
    days: dict[tuple[str, date], bool] = {}
    for r in raised:
        on = _spanning(by_ticker, (r.ticker,), r.at)
        s.relevant += bool(on)
        day = (r.ticker, r.at.astimezone(NEW_YORK).date())
        days[day] = days.get(day, False) or bool(on)
        for ev in on:
            hits[ev].append(r)
    s.alert_days, s.relevant_days = len(days), sum(days.values())
    for ev in events:
        if ev.tweets < min_tweets:
            continue
        s.covered += 1
        if hits.get(ev):
            s.detected += 1
            first = min(r.at for r in hits[ev])
            if ev.first_negative is not None:
                s.delays_min.append(max(0.0, (first - ev.first_negative).total_seconds() / 60))
    return s


# --- the suite ----------------------------------------------------------------------------------
SPLIT = datetime(2015, 1, 1, tzinfo=timezone.utc)  # the two halves reported beside the whole


def suite(
    tweets: str | Path,
    prices: str | Path,
    configs: dict[str, TrackerConfig],
    model: str | Path | None = None,
    min_tweets: int = 5,
    progress=None,
) -> dict[str, dict]:
    """Every configuration and the two naive daily rules, scored on the same scored stream in one
    run: the whole stream, and 2014 / 2015–16 apart (a choice that holds on one half only is luck);
    beside them, the model's own calls against the price moves (`call_relevance`), whole and by
    half. Returns {"model": ..., "configurations": {name: {period: figures}}}."""
    stream = score_stream(tweets, model, progress=progress)
    events = with_tweets(price_events(prices), stream)
    tickers = len({t for e in stream for t in e.tickers})
    first, last = stream[0].published_at, stream[-1].published_at
    periods = {
        "all": (first, last + timedelta(days=1)),
        "2014": (first, SPLIT),
        "2015-16": (SPLIT, last + timedelta(days=1)),
    }
    runs: dict[str, list[Raised]] = {}
    with Progress("detector configurations", total=len(configs), unit="configs", every_s=1) as done:
        for name, config in configs.items():
            runs[name] = tracker_alerts(stream, config)
            done.update(config=name)
    runs["naive: daily 3-sigma, calendar days"] = naive_alerts(stream, calendar_days(stream))
    runs["naive: daily 3-sigma, trading sessions"] = naive_alerts(stream, trading_closes(prices))
    calls = {
        period: call_relevance([e for e in stream if start <= e.published_at < end], events)
        for period, (start, end) in periods.items()
    }
    return {
        "model": {"version": model_version(model), "calls": calls},
        "configurations": {
            name: {
                period: score(
                    raised, events, tickers, (end - start) / timedelta(weeks=1), min_tweets, (start, end)
                ).as_dict()
                for period, (start, end) in periods.items()
            }
            for name, raised in runs.items()
        },
    }


def model_version(model: str | Path | None) -> str:
    from monitor.model_artifact import ModelArtifact
    from monitor.resources import shipped_model

    return ModelArtifact.load(Path(model) if model else shipped_model()).version


def format_suite(found: dict[str, dict]) -> str:
    rows = found["configurations"]
    head = (
        f"{'configuration':<44}{'precision':>10}{'recall':>8}{'found':>8}{'alerts':>8}{'days':>6}{'P/day':>7}{'/tkr-wk':>9}"
        f"{'delay p50':>11}{'p90':>7}   2014 P/R    2015-16 P/R"
    )
    lines = [head]
    for name, r in rows.items():
        a, h1, h2 = r["all"], r["2014"], r["2015-16"]
        delay = (
            f"{a['delay_minutes_median']:>10}m{a['delay_minutes_p90']:>6}m"
            if a["delay_minutes_median"] is not None
            else f"{'-':>11}{'-':>7}"
        )
        lines.append(
            f"{name:<44}{a['precision']:>10.2f}{a['recall']:>8.2f}{a['detected']:>4}/{a['covered_events']:<3}"
            f"{a['alerts']:>8}{a['alert_days']:>6}{a['day_precision']:>7.2f}{a['alerts_per_ticker_week']:>9.3f}{delay}"
            f"   {h1['precision']:.2f}/{h1['recall']:.2f}   {h2['precision']:.2f}/{h2['recall']:.2f}"
        )
    model = found["model"]
    lines.append("\n" + format_calls(model["version"], model["calls"]["all"]))
    return "\n".join(lines)


# --- two models on the same stream --------------------------------------------------------------
def _per_ticker(
    stream: Sequence[ScoredEvent], raised: Sequence[Raised], events: Sequence[Event], min_tweets: int
) -> dict[str, np.ndarray]:
    """Each ticker's counts, the units a paired bootstrap resamples: a tweet belongs to the first
    ticker it names, an alert and an event to their own."""
    by_ticker = _by_ticker(events)
    # called, in span, called and in span | alerts, relevant | covered events, detected
    rows: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(7))
    for e in stream:
        if not e.tickers:
            continue
        inside = bool(_spanning(by_ticker, e.tickers, e.published_at))
        rows[e.tickers[0]] += (e.negative, inside, e.negative and inside, 0, 0, 0, 0)
    hit: set[Event] = set()
    for r in raised:
        on = _spanning(by_ticker, (r.ticker,), r.at)
        rows[r.ticker] += (0, 0, 0, 1, bool(on), 0, 0)
        hit.update(on)
    for ev in events:
        if ev.tweets >= min_tweets:
            rows[ev.ticker] += (0, 0, 0, 0, 0, 1, ev in hit)
    return rows


def _figures(t: np.ndarray) -> np.ndarray:
    """span precision, span recall, alert precision, event recall from summed per-ticker counts
    (the last axis)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack(
            [t[..., 2] / t[..., 0], t[..., 2] / t[..., 1], t[..., 4] / t[..., 3], t[..., 6] / t[..., 5]], -1
        )


FIGURES = ("span_precision", "span_recall", "alert_precision", "event_recall")


def paired_models(
    streams: Mapping[str, Sequence[ScoredEvent]],
    prices: str | Path,
    config: TrackerConfig | None = None,
    min_tweets: int = 5,
    resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Two models' scorings of the same stream side by side under one detector configuration: for
    each, its calls against the price moves (share of its bearish calls in an event's span, share
    of the spans' tweets it calls bearish) and the detector's alert precision and event recall;
    then the second minus the first with a 95% interval from resampling the tickers (all of a
    ticker's tweets, alerts and events together, the same tickers for both models: the
    comparison is paired, and a ticker's bad days are not independent draws)."""
    (name_a, a), (name_b, b) = streams.items()
    if [e.id for e in a] != [e.id for e in b]:
        raise ValueError("the two scorings are not of the same stream")
    events = with_tweets(price_events(prices), a)
    units = sorted({t for e in a for t in e.tickers} | {ev.ticker for ev in events})
    counts = {}
    for name, stream in ((name_a, a), (name_b, b)):
        rows = _per_ticker(stream, tracker_alerts(stream, config), events, min_tweets)
        counts[name] = np.array([rows[t] if t in rows else np.zeros(7) for t in units])
    point = {name: _figures(c.sum(0)) for name, c in counts.items()}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(units), size=(resamples, len(units)))
    diff = _figures(counts[name_b][draws].sum(1)) - _figures(counts[name_a][draws].sum(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a figure with no denominator in any resample: None
        low, high = np.nanpercentile(diff, [2.5, 97.5], axis=0)
    totals = {name: c.sum(0) for name, c in counts.items()}

    def num(x: float) -> float | None:
        return None if math.isnan(x) else round(float(x), 4)

    return {
        "models": {
            name: {
                **{f: num(v) for f, v in zip(FIGURES, point[name])},
                "called_bearish": int(totals[name][0]),
                "alerts": int(totals[name][3]),
                "detected": int(totals[name][6]),
                "covered_events": int(totals[name][5]),
            }
            for name in counts
        },
        "difference": {
            f: {"value": num(point[name_b][i] - point[name_a][i]), "95": [num(low[i]), num(high[i])]}
            for i, f in enumerate(FIGURES)
        },
        "units": len(units),
        "resamples": resamples,
    }


def format_paired(found: dict) -> str:
    (name_a, a), (name_b, b) = found["models"].items()
    width = max(len(name_a), len(name_b), 10)
    lines = [
        f"{'':<{width}}{'bearish calls':>14}{'in a span':>11}{'span tweets called':>20}{'alerts':>8}"
        f"{'precision':>11}{'events found':>14}"
    ]

    def pct(x: float | None, digits: int, w: int) -> str:
        return f"{'-':>{w}} " if x is None else f"{100 * x:>{w}.{digits}f}%"

    for name, m in ((name_a, a), (name_b, b)):
        precision = "-" if m["alert_precision"] is None else f"{m['alert_precision']:.2f}"
        lines.append(
            f"{name:<{width}}{m['called_bearish']:>14,}{pct(m['span_precision'], 2, 10)}{pct(m['span_recall'], 1, 19)}"
            f"{m['alerts']:>8}{precision:>11}{m['detected']:>9}/{m['covered_events']:<4}"
        )
    d = found["difference"]
    lines.append(
        f"\n{name_b} - {name_a}, 95% interval over {found['resamples']} resamples of the {found['units']} tickers:"
    )
    for f, label, scale, unit in (
        ("span_precision", "share of bearish calls in an event's span", 100, " points"),
        ("span_recall", "share of the spans' tweets called bearish", 100, " points"),
        ("alert_precision", "detector precision", 1, ""),
        ("event_recall", "detector recall of the covered events", 1, ""),
    ):
        v, (lo, hi) = d[f]["value"], d[f]["95"]
        if v is None or lo is None or hi is None:
            lines.append(f"  {label:<44}- (a model with nothing to count)")
            continue
        lines.append(f"  {label:<44}{scale * v:+.3f}{unit} [{scale * lo:+.3f}, {scale * hi:+.3f}]")
    return "\n".join(lines)
