"""Detection on event time: the same alerts whatever the number of source partitions, the order in
which they are drained, and the batch boundaries (the real StockNet stream; scores from a keyword
rule, since this is about the tracker, not the model)."""

from __future__ import annotations

import json
import random
from datetime import datetime

import pytest

from drills.stocknet import stream
from monitor.detection.tracker import NewsTracker
from monitor.records import ScoredEvent
from monitor.text import dedup_key

NEGATIVE = ("down", "fall", "drop", "loss", "sell", "short", "bear", "crash", "miss", "cut", "lower", "plunge", "weak")


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [json.loads(v) for v in stream(20_000)[-7000:]]  # April-May 2014: dense enough to alert


def events(items: list[dict], partitions: int) -> list[list[ScoredEvent]]:
    """The items as the scoring stage would announce them, spread over partitions by id (a keyed
    producer), each partition in the stream's order."""
    out: list[list[ScoredEvent]] = [[] for _ in range(partitions)]
    for item in items:
        p = hash(item["id"]) % partitions if partitions > 1 else 0
        text = item["headline"].lower()
        negative = any(w in text for w in NEGATIVE)
        out[p].append(
            ScoredEvent(
                item["id"],
                datetime.fromisoformat(item["published_at"].replace("Z", "+00:00")),
                negative,
                0.9 if negative else 0.1,
                "Stock Commentary",
                tuple(item.get("tickers", ())),
                source=f"news/{p}",
                partitions=partitions,
                dedup_key=dedup_key(item["headline"]),
            )
        )
    return out


def drain(parts: list[list[ScoredEvent]], rng: random.Random | None, replays: bool = False) -> tuple[set, int]:
    """Feed the partitions to a tracker in random chunks (a consumer's uneven drain), then each
    partition's caught-up mark, then the end of the input; (alert id, kind, status, when it was
    raised) and late count."""
    tracker = NewsTracker()
    alerts = []
    cursors = [0] * len(parts)
    while any(c < len(p) for c, p in zip(cursors, parts)):
        live = [i for i, p in enumerate(parts) if cursors[i] < len(p)]
        i = rng.choice(live) if rng else live[0]
        n = rng.randint(1, 800) if rng else len(parts[i])
        chunk = parts[i][cursors[i] : cursors[i] + n]
        for e in chunk:
            alerts += tracker.add(e)
        if replays and rng.random() < 0.2:  # a crash before the commit: the last batch comes again
            for e in chunk[-20:]:
                alerts += tracker.add(e)
        cursors[i] += len(chunk)
        if cursors[i] == len(parts[i]):
            alerts += tracker.caught_up(f"news/{i}", len(parts))
    alerts += tracker.finish()
    return {(a.id, a.kind, a.status, a.window_end) for a in alerts}, tracker.late


def test_the_alerts_do_not_depend_on_partitions_or_drain_order(items) -> None:
    reference, late = drain(events(items, 1), None)
    assert len({a for a, _, s, _ in reference if s == "opened"}) >= 3 and late == 0  # a stream that does alert
    # Some alerts come from early checks of a bucket still open (raised before its end), and they
    # too are the same, at the same moment, however the watermark moved (step by step or in jumps).
    assert any(s == "opened" and t.minute % 15 for _, _, s, t in reference)
    for partitions, seed in [(3, 2), (5, 3)]:
        got, late = drain(events(items, partitions), random.Random(seed), replays=True)
        assert got == reference, (partitions, seed, sorted(got ^ reference)[:5])
        assert late == 0


def test_early_checks_only_raise_alerts_earlier_and_teach_no_baseline(items) -> None:
    """With and without early checks of the open bucket: the same buckets counted, the same
    baselines learnt (they learn at closes only), the same episodes opened; only some are raised
    before their bucket's end."""
    from monitor.detection.tracker import TrackerConfig

    runs = []
    for config in (TrackerConfig(), TrackerConfig(early=None)):
        tracker, alerts = NewsTracker(config), []
        for e in events(items, 1)[0]:
            alerts += tracker.add(e)
        alerts += tracker.finish()
        state = tracker.snapshot()
        runs.append((state["keys"], state["recent"], alerts))
    (keys, recent, early), (keys_at_close, recent_at_close, at_close) = runs
    assert keys == keys_at_close and recent == recent_at_close
    opened = {a.id: a.window_end for a in early if a.status == "opened"}
    opened_at_close = {a.id: a.window_end for a in at_close if a.status == "opened"}
    assert opened.keys() == opened_at_close.keys()
    assert all(opened[i] <= opened_at_close[i] for i in opened) and opened != opened_at_close


def test_without_the_caught_up_marks_the_last_buckets_stay_open(items) -> None:
    parts = events(items, 3)
    tracker = NewsTracker()
    for e in parts[0] + parts[1]:  # partition 2 never heard from: nothing may close
        tracker.add(e)
    assert tracker.closed_buckets == 0 and not tracker.all_caught_up()
    for e in parts[2]:
        tracker.add(e)
    assert tracker.closed_buckets > 0


def test_an_item_older_than_its_partitions_watermark_is_late_and_left_out(items) -> None:
    parts = events(items[:2000], 1)[0]
    stale = parts[10]
    tracker = NewsTracker()
    for e in parts[100:]:
        tracker.add(e)
    tracker.add(stale)  # hours older than what its partition already showed
    assert tracker.late == 1 and all(stale not in bucket for bucket in tracker.open.values())


def test_snapshot_mid_drain_resumes_to_the_same_alerts(items) -> None:
    parts = events(items, 3)
    reference, _ = drain(parts, random.Random(9))
    tracker, alerts = NewsTracker(), []
    flat = [e for chunk in zip(*parts) for e in chunk]
    half = len(flat) // 2
    for e in flat[:half]:
        alerts += tracker.add(e)
    tracker = NewsTracker.restore(json.loads(json.dumps(tracker.snapshot())))
    rest = flat[half:] + [e for p in parts for e in p[min(len(q) for q in parts) :]]
    for e in rest:
        alerts += tracker.add(e)
    for i in range(3):
        alerts += tracker.caught_up(f"news/{i}", 3)
    alerts += tracker.finish()
    assert {(a.id, a.kind, a.status, a.window_end) for a in alerts} == reference
