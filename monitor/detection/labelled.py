"""The labelled-series suite of `bearwatch detect evaluate`: `detect series` (the count detector, one
configuration for every series) on real count series with labelled anomaly windows, scored the way
the public anomaly benchmarks score a detector, beside a naive rule in the same run.

Input: a folder of `timestamp,value` CSVs and a JSON file of windows in the layout of the Numenta
Anomaly Benchmark's `combined_windows.json` (``{"sub/file.csv": [["start", "end"], ...]}``), every file
named in both scored; or a folder of `timestamp,value,label` CSVs labelled row by row, windowed the
way NAB windows its labels (a tenth of the rows shared among the anomalies, centred on each). NAB
(MIT) has two real series that are counts and not tweets (`realKnownCause/nyc_taxi.csv`, taxi
passengers every 30 minutes; `realAWSCloudwatch/elb_request_count_8c0756.csv`, load-balancer
requests every 5 minutes). The tweet-volume series are a held-out evaluation of this project and
are never read here. Microsoft's Cloud Monitoring Dataset (MIT) adds 17 real count series labelled
row by row by the services' own engineers: hourly application crashes and in-app purchases, a
database server's queries a minute, a client's "service unavailable" results a minute.

The score follows NAB's published "standard profile" (Lavin & Ahmad 2015), written here from its
description: only the rows where an alert opens count (`flag`); the first of them inside a window
earns ``A_TP · σ(y)``, where ``y`` is its place in the window (−1 at its start, 0 at its end) and
``σ(y) = 2 / (1 + e^{5y}) − 1`` (0.99 at once, 0 at the end); later ones inside it earn nothing; one
outside every window costs ``0.11 · σ(y)`` (−0.11 far from a window, less just after one, ``y``
measured past the previous window's end in window lengths); a window without a flag costs 1. The
first 15 % of rows (at most 750) are a probation period where flags are not counted. A suite's score
is 100 · (raw − null) / (perfect − null), null = never flagging (−1 per window), perfect = a flag on
every window's first row: 0 means "no better than silence", 100 "perfect". Pooled over series, as
the benchmark does (sums of raw, null and perfect), and per series.
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from monitor.detection.counts import CountSpikeConfig
from monitor.detection.series import (
    DEFAULT,
    Episodes,
    Point,
    config_for_step,
    detect,
    infer_step_seconds,
    read_series,
    read_table,
)
from monitor.errors import SeriesError

A_TP, A_FP, A_FN = 1.0, 0.11, 1.0
PROBATION, PROBATION_MAX = 0.15, 750
WINDOW_SHARE = 0.1  # NAB: all of a series' windows together span a tenth of its rows


def scaled_sigmoid(y: float) -> float:
    """2 / (1 + e^{5y}) − 1: near 1 at the start of a window (y = −1), 0 at its end, towards −1 past it."""
    if y > 3:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def read_windows(path: str | Path) -> dict[str, list[tuple[datetime, datetime]]]:
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        return {name: [(_time(a), _time(b)) for a, b in spans] for name, spans in raw.items()}
    except (OSError, ValueError, TypeError) as exc:
        raise SeriesError(f"{path}: not a windows file ({{'file.csv': [['start', 'end'], ...]}}): {exc}") from None


@dataclass
class SeriesScore:
    rows: int = 0
    windows: int = 0
    found: int = 0  # windows with a flag inside
    flags: int = 0  # flags after the probation period
    false_flags: int = 0  # of those, outside every window
    raw: float = 0.0
    null: float = 0.0
    perfect: float = 0.0
    delays_rows: list[int] | None = None  # from a found window's start to its first flag

    @property
    def score(self) -> float:
        span = self.perfect - self.null
        return 100.0 * (self.raw - self.null) / span if span else 0.0

    def add(self, other: SeriesScore) -> None:
        for name in ("rows", "windows", "found", "flags", "false_flags", "raw", "null", "perfect"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.delays_rows = (self.delays_rows or []) + (other.delays_rows or [])

    def as_dict(self) -> dict:
        d = self.delays_rows or []
        return {
            "score": round(self.score, 1),
            "windows": self.windows,
            "found": self.found,
            "flags": self.flags,
            "false_flags": self.false_flags,
            "rows": self.rows,
            "delay_rows_median": statistics.median(d) if d else None,
        }


def score_flags(
    times: Sequence[datetime], flags: Sequence[bool], windows: Sequence[tuple[datetime, datetime]]
) -> SeriesScore:
    """The standard-profile score of one series' flags (module docstring)."""
    n = len(times)
    spans = []
    for start, end in sorted(windows):
        rows = [i for i, t in enumerate(times) if start <= t <= end]
        if rows:
            spans.append((rows[0], rows[-1]))
    probation = min(math.floor(PROBATION * n), PROBATION_MAX)
    s = SeriesScore(rows=n, windows=len(spans), null=-A_FN * len(spans), delays_rows=[])
    inside: dict[int, int] = {}  # row -> its window
    for w, (a, b) in enumerate(spans):
        s.perfect += A_TP * scaled_sigmoid(-1.0)  # a flag on its first row
        for i in range(a, b + 1):
            inside[i] = w
    first: dict[int, int] = {}
    for i, flagged in enumerate(flags):
        if not flagged or i < probation:
            continue
        s.flags += 1
        window = inside.get(i)
        if window is not None:
            first.setdefault(window, i)
            continue
        s.false_flags += 1
        before = [(a, b) for a, b in spans if b < i]
        if before:
            a, b = before[-1]
            s.raw += A_FP * scaled_sigmoid((i - b) / (b - a + 1))
        else:
            s.raw -= A_FP
    for w, (a, b) in enumerate(spans):
        if w in first:
            s.found += 1
            s.raw += A_TP * scaled_sigmoid((first[w] - b - 1) / (b - a + 1))
            assert s.delays_rows is not None
            s.delays_rows.append(first[w] - a)
        else:
            s.raw -= A_FN
    return s


def naive_flags(points: Sequence[Point], step_s: float, sigmas: float = 3.0) -> list[bool]:
    """A row above the mean + 3 standard deviations of the previous day's rows (at least 24 rows),
    one flag per episode as `detect series` (two quiet hours end it)."""
    history = max(24, round(86400 / step_s))
    past: deque[float] = deque(maxlen=history)
    episodes = Episodes(step_s)
    out = []
    for p in points:
        if p.value is None:  # a missing value: no evidence, as in `detect series`
            out.append(False)
            continue
        hit = len(past) == history and p.value > statistics.fmean(past) + sigmas * statistics.pstdev(past)
        out.append(episodes.step(hit))
        past.append(p.value)
    return out


def candidates() -> dict[str, CountSpikeConfig]:
    """`detect series`' default (first) and the alternatives compared with it."""
    return {
        "default (detect series)": DEFAULT,
        "alpha 1e-4": replace(DEFAULT, alpha=1e-4),
        "alpha 1e-5": replace(DEFAULT, alpha=1e-5),
        "alpha 1e-2": replace(DEFAULT, alpha=1e-2),
        "over-dispersion floor r >= 2": replace(DEFAULT, min_size=2.0),
    }


Labelled = dict[str, tuple[list[Point], list[tuple[datetime, datetime]]]]  # name -> (rows, windows)


def windows_from_labels(
    points: Sequence[Point], labels: Sequence[bool], share: float = WINDOW_SHARE
) -> list[tuple[datetime, datetime]]:
    """NAB's windows for series labelled row by row: each run of labelled rows is one anomaly, and
    its window spans ``share`` of the series' rows divided by the number of anomalies, centred on
    the run (never shorter than the run itself); windows that meet are merged."""
    n = len(points)
    runs, row = [], 0
    for flagged, group in itertools.groupby(labels):
        length = len(list(group))
        if flagged:
            runs.append((row, row + length - 1))
        row += length
    if not runs:
        return []
    size = share * n / len(runs)
    spans: list[list[int]] = []
    for a, b in runs:
        pad = max(0.0, (size - (b - a + 1)) / 2)
        lo, hi = max(0, math.floor(a - pad)), min(n - 1, math.ceil(b + pad))
        if spans and lo <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], hi)
        else:
            spans.append([lo, hi])
    return [(points[lo].timestamp, points[hi].timestamp) for lo, hi in spans]


def load_folder(series_dir: str | Path, windows_file: str | Path | None = None) -> Labelled:
    """Every series of a folder with its windows: those a windows file names, or, without one,
    every CSV under the folder with a `label` column (1 on anomalous rows), windowed as NAB does."""
    folder = Path(series_dir)
    if windows_file is not None:
        windows = read_windows(windows_file)
        names = sorted(name for name in windows if (folder / name).is_file())
        if not names:
            raise SeriesError(f"no series named in {windows_file} is under {folder}")
        return {name: (read_series(folder / name), windows[name]) for name in names}
    out: Labelled = {}
    for path in sorted(folder.rglob("*.csv")):
        points, cells = read_table(path, extra=("label",))
        flags = []
        for line, cell in enumerate(cells["label"], start=2):
            if cell not in ("0", "1"):
                raise SeriesError(f"{path}:{line}: label {cell[:20]!r} is neither 0 nor 1")
            flags.append(cell == "1")
        out[path.relative_to(folder).as_posix()] = (points, windows_from_labels(points, flags))
    if not out:
        raise SeriesError(f"{folder} holds no CSV series (and no windows file was given)")
    return out


def stocknet_volumes(tweets: str | Path, prices: str | Path, min_per_day: float = 1.0) -> Labelled:
    """Real tweet-volume series labelled by real price moves: each StockNet ticker's distinct tweets
    per hour (every hour of the stream, empty ones included), for the tickers with at least
    `min_per_day` a day on average; its windows are the days its price moved ≥ 4 % and ≥ 3 of its
    own standard deviations against the market, either way (a big move up brings a burst of talk
    too), each from the previous close to the end of the day (`monitor.detection.stocknet`)."""
    from monitor.detection.stocknet import price_events, stream_items

    items = stream_items(tweets)
    hour = 3600
    times = [_time(i["published_at"].replace("Z", "+00:00")).timestamp() for i in items]
    first, last = int(min(times) // hour), int(max(times) // hour)
    counts: dict[str, dict[int, int]] = {}
    for item, seconds in zip(items, times):
        slot = int(seconds // hour)
        for ticker in item["tickers"]:
            by_hour = counts.setdefault(ticker, {})
            by_hour[slot] = by_hour.get(slot, 0) + 1
    days = (last - first + 1) / 24
    events: dict[str, list[tuple[datetime, datetime]]] = {}
    for ev in price_events(prices, rises=True):
        events.setdefault(ev.ticker, []).append((ev.span_start, ev.span_end))
    out: Labelled = {}
    for ticker in sorted(counts):
        if sum(counts[ticker].values()) / days < min_per_day:
            continue
        points = []
        for h in range(first, last + 1):
            t = datetime.fromtimestamp(h * hour, tz=timezone.utc)
            points.append(Point(t, float(counts[ticker].get(h, 0)), t.isoformat()))
        out[f"stocknet/{ticker}"] = (points, events.get(ticker, []))
    return out


def suite(series: Labelled, configs: dict[str, CountSpikeConfig]) -> dict[str, dict]:
    """Every configuration and the naive rule on every labelled series: per series and pooled."""
    loaded = {name: (points, infer_step_seconds(points)) for name, (points, _) in series.items()}
    runs: dict[str, dict[str, list[bool]]] = {}
    for label, config in configs.items():
        runs[label] = {
            name: [opens for _, _, opens in detect(points, step, config_for_step(step, config))]
            for name, (points, step) in loaded.items()
        }
    runs["naive: 3-sigma of the previous day"] = {
        name: naive_flags(points, step) for name, (points, step) in loaded.items()
    }
    out: dict[str, dict] = {}
    for label, flags in runs.items():
        pooled = SeriesScore()
        per: dict[str, dict] = {}
        for name, (points, _) in loaded.items():
            one = score_flags([p.timestamp for p in points], flags[name], series[name][1])
            per[name] = one.as_dict()
            pooled.add(one)
        out[label] = {"pooled": pooled.as_dict(), "series": per}
    return out


def format_suite(rows: dict[str, dict]) -> str:
    names = list(next(iter(rows.values()))["series"])
    names = names if len(names) <= 4 else []  # many series: the pooled figures only
    head = f"{'configuration':<38}{'score':>7}{'found':>10}{'flags':>7}{'false':>7}" + "".join(
        f"   {Path(n).stem[:22]:>22}" for n in names
    )
    lines = [head]
    for label, r in rows.items():
        p = r["pooled"]
        cells = "".join(
            f"   {s['score']:>7.1f} ({s['found']}/{s['windows']}, {s['flags']:>3} fl)"
            for s in (r["series"][n] for n in names)
        )
        lines.append(
            f"{label:<38}{p['score']:>7.1f}{p['found']:>6}/{p['windows']:<3}{p['flags']:>7}{p['false_flags']:>7}{cells}"
        )
    return "\n".join(lines)
