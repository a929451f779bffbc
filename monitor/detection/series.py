"""`bearwatch detect series`: the count-spike detector run causally over a `timestamp,value` CSV.

One configuration for every series: the step is inferred (median gap between rows), and the
seasonal slot is the hour of the day, on weekdays and at weekends apart (48 slots), for steps of an
hour or less, or the day of the week for longer ones.
The decision at a row uses only rows up to it.

Like the alerting daemon, it raises one alert per episode: `flag` is 1 only on the row where an
episode opens (its first significant row); later significant rows continue the episode, which ends,
as the daemon's do, after two quiet hours (at least two rows) without one. A missing value (an
empty or NaN cell) is written with score 0 and gives the detector no evidence. `anomaly_score`, for every row, is the
significance on a 0–1 scale: ``s / (s + s_alpha)`` with ``s = -log10(p)``, so 0.5 is exactly the
detector's α, 1 is certainty, 0 an ordinary row (and every warm-up row).
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from monitor.detection.counts import HOUR_SLOTS, CountSpike, CountSpikeConfig, hour_slot
from monitor.detection.tracker import TrackerConfig
from monitor.errors import SeriesError

DEFAULT = CountSpikeConfig()


# Cells that stand for "no observation" (a collector's gap, an export of NaN): such a row is kept in
# the output but gives the detector no evidence either way.
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none"})


@dataclass(frozen=True)
class Point:
    timestamp: datetime
    value: float | None  # None: a missing value
    raw_timestamp: str


def _parse_time(text: str) -> datetime:
    text = text.strip()
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        try:
            t = datetime.fromtimestamp(float(text), tz=timezone.utc)
        except ValueError:
            raise SeriesError(f"timestamp {text[:40]!r} is neither ISO 8601 nor epoch seconds") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def read_series(path: str | Path) -> list[Point]:
    return read_table(path)[0]


def read_table(path: str | Path, extra: Sequence[str] = ()) -> tuple[list[Point], dict[str, list[str]]]:
    try:
        return _read_table(path, extra)
    except UnicodeDecodeError as exc:
        raise SeriesError(f"{path}: not UTF-8 text (byte {exc.start}): save the file as UTF-8") from None


def _read_table(path: str | Path, extra: Sequence[str]) -> tuple[list[Point], dict[str, list[str]]]:
    """The rows of a `timestamp,value` CSV and the named extra columns' cells (e.g. a `label`).

    Column names match whatever their case and surrounding spaces (`TimeStamp`, ` Value`), a UTF-8
    byte-order mark is ignored, an empty or NaN value is a missing observation, not an error, and
    rows come back in time order (a file written newest first is read oldest first)."""
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        columns = {name.strip().lower(): name for name in reader.fieldnames or () if name is not None}
        wanted = ("timestamp", "value", *extra)
        if not set(wanted) <= set(columns):
            raise SeriesError(f"{path}: expected a header with {', '.join(wanted)} columns, got {reader.fieldnames}")
        points: list[Point] = []
        cells: dict[str, list[str]] = {name: [] for name in extra}
        for row in reader:
            raw = (row[columns["value"]] or "").strip()
            value: float | None = None
            if raw.lower() not in MISSING:
                try:
                    value = float(raw)
                except ValueError:
                    raise SeriesError(f"{path}:{reader.line_num}: value {raw[:40]!r} is not a number") from None
                if not math.isfinite(value) or value < 0:
                    raise SeriesError(f"{path}:{reader.line_num}: counts must be finite and not negative ({raw[:40]})")
            stamp = row[columns["timestamp"]] or ""
            points.append(Point(_parse_time(stamp), value, stamp))
            for name in extra:
                cells[name].append((row[columns[name]] or "").strip())
    if any(b.timestamp < a.timestamp for a, b in zip(points, points[1:])):  # newest first, or shuffled
        order = sorted(range(len(points)), key=lambda i: points[i].timestamp)
        points = [points[i] for i in order]
        cells = {name: [column[i] for i in order] for name, column in cells.items()}
    return points, cells


def infer_step_seconds(points: Sequence[Point]) -> float:
    gaps = [(b.timestamp - a.timestamp).total_seconds() for a, b in zip(points, points[1:])]
    gaps = [g for g in gaps if g > 0]
    return statistics.median(gaps) if gaps else 3600.0


def config_for_step(step_s: float, base: CountSpikeConfig = DEFAULT) -> CountSpikeConfig:
    """Seasonality and memory in units of the series' own step."""
    if step_s <= 3600:
        per_day = max(1.0, 86400 / step_s)
        return replace(base, seasonal_period=HOUR_SLOTS, warmup=max(base.warmup, int(per_day)), halflife=3 * per_day)
    if step_s < 7 * 86400:
        return replace(base, seasonal_period=7, warmup=14, halflife=28.0, seasonal_halflife=8.0)
    return replace(base, seasonal_period=0, warmup=8, halflife=12.0)


def slot_of(t: datetime, step_s: float) -> int:
    """The hour of the day, weekend hours apart (a Saturday's 1 a.m. is not a Tuesday's), for steps
    of an hour or less; the day of the week for longer ones. A slot not yet seen counts as average."""
    if step_s <= 3600:
        return hour_slot(t)
    return t.weekday() if step_s < 7 * 86400 else 0


def quiet_steps(step_s: float) -> int:
    """Rows without a significant one that end an episode: the daemon's two quiet hours
    (TrackerConfig.end_after buckets), and at least two rows."""
    daemon = TrackerConfig()
    return max(2, round(daemon.end_after * daemon.bucket.total_seconds() / step_s))


class Episodes:
    """One alert per episode: `step(hit)` says whether a row opens one (a hit while none is open);
    an episode ends after `quiet_steps` rows without a hit."""

    def __init__(self, step_s: float) -> None:
        self.quiet_after = quiet_steps(step_s)
        self.quiet: int | None = None  # quiet rows since the last hit; None: no episode open

    def step(self, hit: bool) -> bool:
        opens = hit and self.quiet is None
        if hit:
            self.quiet = 0
        elif self.quiet is not None:
            self.quiet = None if self.quiet + 1 >= self.quiet_after else self.quiet + 1
        return opens


def anomaly_score(p_value: float, alpha: float) -> float:
    """Significance on 0–1: 0.5 at p = α, towards 1 as p → 0, 0 at p = 1."""
    s = -math.log10(max(p_value, 1e-300))
    return s / (s + -math.log10(alpha)) if s > 0 else 0.0


def detect(
    points: Iterable[Point], step_s: float, config: CountSpikeConfig | None = None
) -> list[tuple[Point, float, bool]]:
    """(point, anomaly score, whether an alert opens at this row) for every row, causally."""
    config = config or config_for_step(step_s)
    detector = CountSpike(config)
    episodes = Episodes(step_s)
    out = []
    for point in points:
        if point.value is None:  # no observation: no evidence, and the episode neither grows nor ages
            out.append((point, 0.0, False))
            continue
        decision = detector.update(point.value, slot_of(point.timestamp, step_s))
        score = anomaly_score(decision.p_value, config.alpha) if detector.seen > config.warmup else 0.0
        out.append((point, round(score, 6), episodes.step(decision.flag)))
    return out


def run_file(input_path: str | Path, output_path: str | Path) -> int:
    points = read_series(input_path)
    step = infer_step_seconds(points)
    results = detect(points, step)
    with open(output_path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["timestamp", "anomaly_score", "flag"])
        for point, score, flag in results:
            writer.writerow([point.raw_timestamp, f"{score:.6f}", int(flag)])
    return sum(flag for _, _, flag in results)
